package apijson

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"unicode/utf8"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/rpcerr"
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
// client holds. A large state comes in chunks, numbered by Chunk: the
// client applies them together when it has the one with Last set, which
// alone carries the token.
type Reset struct {
	Token string     `json:"token,omitempty"`
	Kvs   []KeyValue `json:"kvs"`
	Chunk int32      `json:"chunk,omitempty"`
	Last  bool       `json:"last"`
}

// NewReset is the JSON shape of a subscription's state: kvs gathered from
// every chunk of a Reset, and its token.
func NewReset(kvs []*pb.KeyValue, token string) Reset {
	return Reset{Token: token, Kvs: NewKeyValues(kvs, false), Last: true}
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

// Error is the body of every error reply of Confetti's HTTP APIs.
type Error struct {
	Error string `json:"error"`
	// Code is the HTTP status.
	Code int `json:"code"`
	// GRPCCode is the name of the gRPC code ("FailedPrecondition").
	GRPCCode string `json:"grpc_code"`
}

// HTTPStatus is the HTTP status of a gRPC code on Confetti's HTTP APIs.
// It is grpc-gateway's mapping except for FailedPrecondition, which is
// 409 Conflict rather than 400: on these APIs it means the request lost
// against the current state (a compare-and-swap whose mod revision is
// stale, no active shard to place a tenant on), not that the request was
// malformed. Aborted (a release edited concurrently) is 409 as well.
func HTTPStatus(code codes.Code) int {
	if code == codes.FailedPrecondition {
		return http.StatusConflict
	}
	return runtime.HTTPStatusFromCode(code)
}

// WriteError writes err as an Error with the HTTP status of its gRPC
// code (errors of package rpcerr carry theirs).
func WriteError(w http.ResponseWriter, err error) {
	s := status.Convert(rpcerr.Status(err))
	WriteErrorStatus(w, HTTPStatus(s.Code()), s.Code(), s.Message())
}

// WriteErrorStatus writes an Error with httpStatus.
func WriteErrorStatus(w http.ResponseWriter, httpStatus int, code codes.Code, msg string) {
	h := w.Header()
	h.Del("Trailer")
	h.Del("Transfer-Encoding")
	h.Del("ETag")
	WriteJSON(w, httpStatus, Error{Error: msg, Code: httpStatus, GRPCCode: code.String()})
}

// WriteJSON writes v as the JSON body of a reply with httpStatus.
func WriteJSON(w http.ResponseWriter, httpStatus int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(httpStatus)
	Encode(w, v)
}

// Proto is the KeyValue a subscriber of the gRPC door would have got.
func (k KeyValue) Proto() *pb.KeyValue {
	out := &pb.KeyValue{Key: k.Key, CreateRevision: k.CreateRevision, ModRevision: k.ModRevision, Version: k.Version, Lease: k.Lease}
	switch {
	case k.Value != nil:
		out.Value = []byte(*k.Value)
	case k.ValueBase64 != nil:
		out.Value = k.ValueBase64
	}
	if k.Kind != "" {
		out.Kind = pb.KeyValue_Kind(pb.KeyValue_Kind_value[k.Kind])
	}
	if k.Item != nil {
		out.Item = &pb.ItemRef{Item: k.Item.Item, Version: k.Item.Version, GrayId: k.Item.GrayID, ContentHash: k.Item.ContentHash}
	}
	return out
}

// Proto is the SubscribeResponse of a message in the shape of the gRPC
// door: a client of the HTTP door and one of gRPC hold the same state.
func (m Message) Proto() *pb.SubscribeResponse {
	switch {
	case m.Reset != nil:
		r := &pb.Reset{Token: m.Reset.Token, Chunk: m.Reset.Chunk, Last: m.Reset.Last}
		for _, kv := range m.Reset.Kvs {
			r.Kvs = append(r.Kvs, kv.Proto())
		}
		return &pb.SubscribeResponse{Response: &pb.SubscribeResponse_Reset_{Reset_: r}}
	case m.Events != nil:
		ev := &pb.Events{}
		for _, t := range m.Events.Txns {
			txn := &pb.Txn{Revision: t.Revision, Token: t.Token}
			for _, e := range t.Events {
				pe := &pb.Event{Type: pb.Event_Type(pb.Event_Type_value[e.Type]), Kv: e.Kv.Proto()}
				if e.PrevKv != nil {
					pe.PrevKv = e.PrevKv.Proto()
				}
				txn.Events = append(txn.Events, pe)
			}
			ev.Txns = append(ev.Txns, txn)
		}
		return &pb.SubscribeResponse{Response: &pb.SubscribeResponse_Events{Events: ev}}
	case m.Progress != nil:
		return &pb.SubscribeResponse{Response: &pb.SubscribeResponse_Progress{Progress: &pb.Progress{Token: m.Progress.Token}}}
	}
	return &pb.SubscribeResponse{}
}
