package apijson

import (
	"bytes"
	"encoding/json"
	"io"
	"unicode/utf8"

	pb "github.com/confetti-io/confetti/api/confettipb"
)

// KeyValue is one key. Value holds the value when it is valid UTF-8;
// otherwise ValueBase64 holds it in base64. Neither is set when only keys
// were asked for. Revisions and versions are JSON numbers (they stay far
// below 2^53); the lease id is a string, as the proto JSON mapping writes
// every 64-bit integer.
type KeyValue struct {
	Key            string  `json:"key"`
	Value          *string `json:"value,omitempty"`
	ValueBase64    []byte  `json:"value_base64,omitempty"`
	CreateRevision int64   `json:"create_revision"`
	ModRevision    int64   `json:"mod_revision"`
	Version        int64   `json:"version"`
	Lease          int64   `json:"lease,string"`
	// Kind is set in a subscription for a key that is not a plain key:
	// "ITEM" or "SERVICE".
	Kind string `json:"kind,omitempty"`
	// Item is set on an ITEM key: the version the subscriber resolves to.
	Item *ItemRef `json:"item,omitempty"`
}

// ItemRef is the version of a config item a subscriber holds.
type ItemRef struct {
	Item    string `json:"item"`
	Version int64  `json:"version"`
	// GrayID is the gray that chose the version; empty means stable.
	GrayID      string `json:"gray_id,omitempty"`
	ContentHash string `json:"content_hash,omitempty"`
}

// NewKeyValue is the JSON shape of kv, without its value when keysOnly.
func NewKeyValue(kv *pb.KeyValue, keysOnly bool) KeyValue {
	out := KeyValue{
		Key:            kv.GetKey(),
		CreateRevision: kv.GetCreateRevision(),
		ModRevision:    kv.GetModRevision(),
		Version:        kv.GetVersion(),
		Lease:          kv.GetLease(),
	}
	if k := kv.GetKind(); k != pb.KeyValue_KEY {
		out.Kind = k.String()
	}
	if it := kv.GetItem(); it != nil {
		out.Item = &ItemRef{Item: it.GetItem(), Version: it.GetVersion(), GrayID: it.GetGrayId(), ContentHash: it.GetContentHash()}
	}
	if keysOnly {
		return out
	}
	if v := kv.GetValue(); utf8.Valid(v) {
		s := string(v)
		out.Value = &s
	} else {
		out.ValueBase64 = v
	}
	return out
}

// NewKeyValues is the JSON shape of kvs.
func NewKeyValues(kvs []*pb.KeyValue, keysOnly bool) []KeyValue {
	out := make([]KeyValue, 0, len(kvs))
	for _, kv := range kvs {
		out = append(out, NewKeyValue(kv, keysOnly))
	}
	return out
}

// Written is the key a put of value at key left, from the put's reply:
// created at the reply's revision, or, when the reply carries the key's
// previous value (the request asked for prev_kv), replaced with the next
// version of the same creation.
func Written(key string, value []byte, resp *pb.PutResponse) KeyValue {
	rev := resp.GetHeader().GetRevision()
	kv := &pb.KeyValue{Key: key, Value: value, CreateRevision: rev, ModRevision: rev, Version: 1, Lease: resp.GetLease()}
	if prev := resp.GetPrevKv(); prev != nil {
		kv.CreateRevision, kv.Version = prev.GetCreateRevision(), prev.GetVersion()+1
	}
	return NewKeyValue(kv, false)
}

// List is a listing of keys at one revision.
type List struct {
	Kvs []KeyValue `json:"kvs"`
	// Count is the number of keys from the listing's start to the end of
	// the range, whatever the limit.
	Count int64 `json:"count"`
	// More is true when keys follow this listing; Next, when set, is
	// where the next page starts.
	More     bool   `json:"more"`
	Next     string `json:"next,omitempty"`
	Revision int64  `json:"revision"`
}

// NewList is the JSON shape of a range reply.
func NewList(resp *pb.RangeResponse, keysOnly bool) List {
	return List{
		Kvs:      NewKeyValues(resp.GetKvs(), keysOnly),
		Count:    resp.GetCount(),
		More:     resp.GetMore(),
		Revision: resp.GetHeader().GetRevision(),
	}
}

// Deleted is the reply of a delete: how many keys it removed.
type Deleted struct {
	Deleted  int64 `json:"deleted"`
	Revision int64 `json:"revision"`
}

// NewDeleted is the JSON shape of a delete reply.
func NewDeleted(resp *pb.DeleteRangeResponse) Deleted {
	return Deleted{Deleted: resp.GetDeleted(), Revision: resp.GetHeader().GetRevision()}
}

// Event is one change of one key in a subscription: Type is "PUT" or
// "DELETE"; a DELETE's Kv carries the key and the revision of the delete.
type Event struct {
	Type   string    `json:"type"`
	Kv     KeyValue  `json:"kv"`
	PrevKv *KeyValue `json:"prev_kv,omitempty"`
}

// Txn is the part of one etcd transaction a subscription sees. Token
// resumes exactly after it.
type Txn struct {
	Revision int64   `json:"revision"`
	Token    string  `json:"token"`
	Events   []Event `json:"events"`
}

// NewTxn is the JSON shape of a subscription's transaction.
func NewTxn(txn *pb.Txn) Txn {
	out := Txn{Revision: txn.GetRevision(), Token: txn.GetToken(), Events: make([]Event, 0, len(txn.GetEvents()))}
	for _, ev := range txn.GetEvents() {
		e := Event{Type: ev.GetType().String(), Kv: NewKeyValue(ev.GetKv(), false)}
		if prev := ev.GetPrevKv(); prev != nil {
			p := NewKeyValue(prev, false)
			e.PrevKv = &p
		}
		out.Events = append(out.Events, e)
	}
	return out
}

// Events is one or more whole transactions of a subscription, in
// revision order.
type Events struct {
	Txns []Txn `json:"txns"`
}

// NewEvents is the JSON shape of a subscription's Events message.
func NewEvents(evs *pb.Events) Events {
	out := Events{Txns: make([]Txn, 0, len(evs.GetTxns()))}
	for _, txn := range evs.GetTxns() {
		out.Txns = append(out.Txns, NewTxn(txn))
	}
	return out
}

// Reset is the whole state of a subscription at Token, replacing what the
// client holds.
type Reset struct {
	Token string     `json:"token"`
	Kvs   []KeyValue `json:"kvs"`
}

// NewReset is the JSON shape of a subscription's state: kvs gathered from
// every chunk of a Reset, and its token.
func NewReset(kvs []*pb.KeyValue, token string) Reset {
	return Reset{Token: token, Kvs: NewKeyValues(kvs, false)}
}

// Marshal encodes v as one line of JSON, with a final newline and without
// escaping HTML characters (values are config, often with < and &).
func Marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	if err := Encode(&b, v); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// Encode writes v to w as Marshal does.
func Encode(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// Progress says nothing changed for a subscription up to Token.
type Progress struct {
	Token string `json:"token"`
}

// Message is one message of a subscription as one JSON object: exactly
// one of its fields is set.
type Message struct {
	Reset    *Reset    `json:"reset,omitempty"`
	Events   *Events   `json:"events,omitempty"`
	Progress *Progress `json:"progress,omitempty"`
}
