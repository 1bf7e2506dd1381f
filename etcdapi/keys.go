package etcdapi

import (
	"fmt"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/confetti-io/confetti/internal/keys"
)

// keyRange is an etcd key range in the native API's terms: a key, and
// either a range end or the prefix flag.
type keyRange struct {
	key, end string
	prefix   bool
}

// nativeRange turns an etcd key and range end into the native API's
// terms, which mean the same keys: an empty end names the single key,
// "\x00" every key from key on, etcd's prefix end of key (which need not
// be UTF-8) every key starting with key, and any other end [key, end).
// The native API then clamps the range inside the tenant. Keys are UTF-8
// strings in Confetti, so other keys are refused.
func nativeRange(key, end []byte) (keyRange, error) {
	if !utf8.Valid(key) {
		return keyRange{}, status.Errorf(codes.InvalidArgument, "etcdapi: key %q is not UTF-8: Confetti keys are UTF-8 strings", key)
	}
	k, e := string(key), string(end)
	switch {
	case e == "" || e == "\x00":
		return keyRange{key: k, end: e}, nil
	case k != "" && e == keys.PrefixEnd(k):
		return keyRange{key: k, prefix: true}, nil
	case !utf8.Valid(end):
		return keyRange{}, status.Errorf(codes.InvalidArgument, "etcdapi: range end %q is not UTF-8 and not the prefix end of the key: Confetti keys are UTF-8 strings", end)
	}
	return keyRange{key: k, end: e}, nil
}

// inRange reports whether the tenant key k lies in the etcd range
// [key, end) with etcd's meaning of an empty end (the single key) and of
// "\x00" (every key from key on).
func inRange(key, end []byte, k string) bool {
	switch string(end) {
	case "":
		return k == string(key)
	case "\x00":
		return k >= string(key)
	}
	return k >= string(key) && k < string(end)
}

// watchPrefix is the longest prefix shared by every key of the etcd range
// [key, end), cut back to whole UTF-8 characters: the scope of the cache
// subscription a watch filters with inRange.
func watchPrefix(key, end []byte) string {
	switch string(end) {
	case "":
		return validPrefix(key)
	case "\x00":
		return ""
	}
	n := 0
	for n < len(key) && n < len(end) && key[n] == end[n] {
		n++
	}
	return validPrefix(key[:n])
}

func validPrefix(b []byte) string {
	for len(b) > 0 && !utf8.Valid(b) {
		b = b[:len(b)-1]
	}
	return string(b)
}

// checkKey refuses a key no write may name.
func checkKey(key []byte) error {
	if len(key) == 0 {
		return status.Error(codes.InvalidArgument, "etcdserver: key is not provided")
	}
	if !utf8.Valid(key) {
		return status.Error(codes.InvalidArgument, fmt.Sprintf("etcdapi: key %q is not UTF-8: Confetti keys are UTF-8 strings", key))
	}
	return nil
}
