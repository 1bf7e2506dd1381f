package cache

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"hash"
	"sync"

	"github.com/cespare/xxhash/v2"
)

// position is what a resume token carries: where in which shard's history
// a subscriber stands, for which view.
type position struct {
	tenant string
	shard  string
	epoch  int64
	rev    int64
	// view hashes the subscription's prefixes and identity: a token is only
	// resumable for the view its state was built for.
	view uint64
}

const (
	tokenVersion = 1
	tokenMACSize = 16
)

// tokenCodec signs and checks tokens with the cluster-wide token key, so
// any cache node accepts another's tokens and no client can forge one.
type tokenCodec struct {
	key []byte
	// macs holds keyed HMACs for reuse: keying one costs more than
	// signing a token, and a node signs one per transaction per group.
	macs sync.Pool
}

func newTokenCodec(key []byte) *tokenCodec {
	c := &tokenCodec{key: key}
	c.macs.New = func() any { return hmac.New(sha256.New, key) }
	return c
}

func (c *tokenCodec) encode(p position) string {
	b := make([]byte, 0, 64)
	b = append(b, tokenVersion, byte(len(p.tenant)))
	b = append(b, p.tenant...)
	b = append(b, byte(len(p.shard)))
	b = append(b, p.shard...)
	b = binary.AppendUvarint(b, uint64(p.epoch))
	b = binary.AppendUvarint(b, uint64(p.rev))
	b = binary.BigEndian.AppendUint64(b, p.view)
	b = append(b, c.mac(b)...)
	return base64.RawURLEncoding.EncodeToString(b)
}

func (c *tokenCodec) decode(s string) (position, error) {
	body, sum, err := split(s)
	if err != nil {
		return position{}, err
	}
	if !hmac.Equal(sum, c.mac(body)) {
		return position{}, fmt.Errorf("%w: signature mismatch: the token was truncated, altered, or issued by another cluster", ErrInvalidToken)
	}
	return parse(body)
}

// TokenRevision reads the shard revision out of a resume token without
// checking its signature. Tokens are opaque to clients, which must never
// depend on their content; this serves diagnostics and contract checks.
func TokenRevision(token string) (int64, error) {
	body, _, err := split(token)
	if err != nil {
		return 0, err
	}
	p, err := parse(body)
	return p.rev, err
}

// split decodes a token into its body and signature.
func split(s string) (body, sum []byte, err error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: not a token (bad encoding); pass a token exactly as a previous message carried it", ErrInvalidToken)
	}
	if len(b) < 1+tokenMACSize {
		return nil, nil, fmt.Errorf("%w: truncated", ErrInvalidToken)
	}
	return b[:len(b)-tokenMACSize], b[len(b)-tokenMACSize:], nil
}

// parse reads a token body.
func parse(body []byte) (position, error) {
	if body[0] != tokenVersion {
		return position{}, fmt.Errorf("%w: unknown version %d", ErrInvalidToken, body[0])
	}
	var p position
	rest := body[1:]
	var ok bool
	if p.tenant, rest, ok = readString(rest); !ok {
		return position{}, fmt.Errorf("%w: malformed tenant", ErrInvalidToken)
	}
	if p.shard, rest, ok = readString(rest); !ok {
		return position{}, fmt.Errorf("%w: malformed shard", ErrInvalidToken)
	}
	epoch, n := binary.Uvarint(rest)
	if n <= 0 {
		return position{}, fmt.Errorf("%w: malformed epoch", ErrInvalidToken)
	}
	rest = rest[n:]
	rev, n := binary.Uvarint(rest)
	if n <= 0 {
		return position{}, fmt.Errorf("%w: malformed revision", ErrInvalidToken)
	}
	rest = rest[n:]
	if len(rest) != 8 {
		return position{}, fmt.Errorf("%w: malformed view", ErrInvalidToken)
	}
	p.epoch, p.rev, p.view = int64(epoch), int64(rev), binary.BigEndian.Uint64(rest)
	return p, nil
}

func (c *tokenCodec) mac(b []byte) []byte {
	m := c.macs.Get().(hash.Hash)
	m.Reset()
	m.Write(b)
	sum := m.Sum(make([]byte, 0, sha256.Size))[:tokenMACSize]
	c.macs.Put(m)
	return sum
}

func readString(b []byte) (string, []byte, bool) {
	if len(b) < 1 || len(b) < 1+int(b[0]) {
		return "", nil, false
	}
	n := int(b[0])
	return string(b[1 : 1+n]), b[1+n:], true
}

// viewHash identifies what a subscriber's state is built from: its
// normalized prefixes and its effective view (which item versions release
// resolution gives it; empty while no release applies). Subscribers with
// the same view hash receive the same bytes, and a token resumes only for
// the view it was issued for; another view gets a Reset.
func viewHash(prefixes []string, view string) uint64 {
	h := xxhash.New()
	for _, p := range prefixes {
		h.WriteString(p)
		h.Write([]byte{0})
	}
	h.Write([]byte{1})
	h.WriteString(view)
	return h.Sum64()
}
