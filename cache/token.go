package cache

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"

	"github.com/cespare/xxhash/v2"

	"github.com/confetti-io/confetti/api/confettipb"
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
}

func (c tokenCodec) encode(p position) string {
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

func (c tokenCodec) decode(s string) (position, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return position{}, fmt.Errorf("%w: not a token (bad encoding); pass a token exactly as a previous message carried it", ErrInvalidToken)
	}
	if len(b) < 1+tokenMACSize {
		return position{}, fmt.Errorf("%w: truncated", ErrInvalidToken)
	}
	body, sum := b[:len(b)-tokenMACSize], b[len(b)-tokenMACSize:]
	if !hmac.Equal(sum, c.mac(body)) {
		return position{}, fmt.Errorf("%w: signature mismatch: the token was truncated, altered, or issued by another cluster", ErrInvalidToken)
	}
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

func (c tokenCodec) mac(b []byte) []byte {
	m := hmac.New(sha256.New, c.key)
	m.Write(b)
	return m.Sum(nil)[:tokenMACSize]
}

func readString(b []byte) (string, []byte, bool) {
	if len(b) < 1 || len(b) < 1+int(b[0]) {
		return "", nil, false
	}
	n := int(b[0])
	return string(b[1 : 1+n]), b[1+n:], true
}

// viewHash identifies what a subscriber's state was built from: its
// (normalized) prefixes and its identity, which release resolution uses.
func viewHash(prefixes []string, id *confettipb.Identity) uint64 {
	h := xxhash.New()
	for _, p := range prefixes {
		h.WriteString(p)
		h.Write([]byte{0})
	}
	h.Write([]byte{1})
	if id != nil {
		h.WriteString(id.GetInstanceId())
		h.Write([]byte{0})
		labels := make([]string, 0, len(id.GetLabels()))
		for k, v := range id.GetLabels() {
			labels = append(labels, k+"="+v)
		}
		slices.Sort(labels)
		h.WriteString(strings.Join(labels, "\x00"))
	}
	return h.Sum64()
}
