package keys

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"google.golang.org/grpc/codes"

	"github.com/confetti-io/confetti/internal/rpcerr"
)

const (
	// Root prefixes every tenant's data on a shard.
	Root = "/confetti/t/"

	// SpaceKV, SpaceSvc and SpaceCfg are the namespaces inside a tenant
	// that subscriptions may name.
	SpaceKV  = "kv/"
	SpaceSvc = "svc/"
	SpaceCfg = "cfg/"

	fence = "fence"
	// lease holds the owner keys that bind leases to the tenant.
	lease = "lease/"
)

// Spaces lists the namespaces a subscription may see, in key order.
var Spaces = []string{SpaceCfg, SpaceKV, SpaceSvc}

var (
	// ErrInvalidName is returned for a tenant or shard name outside
	// [a-z0-9][a-z0-9-]{0,62}, and for a service or instance name outside
	// [a-zA-Z0-9._-]{1,128}.
	ErrInvalidName = rpcerr.New(codes.InvalidArgument, "keys: invalid name")
	// ErrEmptyKey is returned for a request without a key.
	ErrEmptyKey = rpcerr.New(codes.InvalidArgument, "keys: empty key")
	// ErrInvalidKey is returned for a key or range end that is not valid
	// UTF-8.
	ErrInvalidKey = rpcerr.New(codes.InvalidArgument, "keys: invalid key")
	// ErrInvalidRange is returned for a range that cannot be served.
	ErrInvalidRange = rpcerr.New(codes.InvalidArgument, "keys: invalid range")
	// ErrInvalidPrefix is returned for a subscription prefix outside the
	// tenant's visible namespaces.
	ErrInvalidPrefix = rpcerr.New(codes.InvalidArgument, "keys: invalid prefix")
)

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// ValidName checks a tenant or shard name.
func ValidName(kind, name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("%w: %s %q must match [a-z0-9][a-z0-9-]{0,62} (lowercase letters, digits and dashes, at most 63)", ErrInvalidName, kind, name)
	}
	return nil
}

var svcNameRE = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,128}$`)

// ValidSvcName checks a service or instance name: kind names which one in
// the error.
func ValidSvcName(kind, name string) error {
	if !svcNameRE.MatchString(name) {
		return fmt.Errorf("%w: %s %q must match [a-zA-Z0-9._-]{1,128} (letters, digits, dots, underscores and dashes, at most 128)", ErrInvalidName, kind, name)
	}
	return nil
}

// CheckKey refuses a caller's key, prefix or range end that is not valid
// UTF-8. Keys are UTF-8 strings everywhere in Confetti's API (proto
// strings, JSON, URL paths), so raw bytes cannot name a key. gRPC refuses
// to carry such a string at all, so this check belongs where keys arrive
// as bytes: URL paths and command lines.
func CheckKey(key string) error {
	if !utf8.ValidString(key) {
		return fmt.Errorf("%w: %q is not valid UTF-8: keys are UTF-8 strings (text, not raw bytes)", ErrInvalidKey, key)
	}
	return nil
}

// Tenant returns the prefix of all of a tenant's keys.
func Tenant(tenant string) string { return Root + tenant + "/" }

// KV returns the prefix of a tenant's plain keys.
func KV(tenant string) string { return Tenant(tenant) + SpaceKV }

// Fence returns the key that, while present, refuses every write of the
// tenant on this shard.
func Fence(tenant string) string { return Tenant(tenant) + fence }

// SvcPrefix returns the prefix of every instance of a service of the
// tenant. Service names never contain "/" (see ValidSvcName), so the
// prefix of one service never covers another's.
func SvcPrefix(tenant, service string) string {
	return Tenant(tenant) + SpaceSvc + service + "/"
}

// Svc returns the key of one registered instance of a service.
func Svc(tenant, service, instance string) string {
	return SvcPrefix(tenant, service) + instance
}

// LeaseOwner returns the key that binds lease id to the tenant: it is
// written attached to the lease when the lease is granted for the tenant,
// so it exists exactly while the lease lives. It lies outside the visible
// namespaces, so subscribers never see it.
func LeaseOwner(tenant string, id int64) string {
	return Tenant(tenant) + lease + strconv.FormatInt(id, 10)
}

// Split splits a physical key into its tenant and the key relative to the
// tenant's prefix. ok is false for keys outside Root.
func Split(physical string) (tenant, rel string, ok bool) {
	rest, found := strings.CutPrefix(physical, Root)
	if !found {
		return "", "", false
	}
	tenant, rel, found = strings.Cut(rest, "/")
	if !found || tenant == "" {
		return "", "", false
	}
	return tenant, rel, true
}

// Visible reports whether a tenant-relative key belongs to a namespace that
// subscribers see (the fence and any unknown key are internal). Keys are
// UTF-8 in Confetti's API; a key that is not (only writable around the
// proxy, straight into etcd) is never shown.
func Visible(rel string) bool {
	if !utf8.ValidString(rel) {
		return false
	}
	for _, s := range Spaces {
		if strings.HasPrefix(rel, s) {
			return true
		}
	}
	return false
}

// Range is a physical key range [Start, End); End empty means the single
// key Start.
type Range struct {
	Start, End string
}

// KVRange turns a caller's key, range end and prefix flag into a physical
// range inside the tenant's KV space:
//
//   - prefix: every key starting with key; an empty key means the whole
//     KV space, and a key ending in 0xff bytes stays inside it;
//   - rangeEnd "\x00": every key from key to the end of the KV space;
//   - rangeEnd: [key, rangeEnd), which can never leave the KV space since
//     both ends carry its prefix;
//   - otherwise the single key, which must not be empty.
func KVRange(tenant, key, rangeEnd string, prefix bool) (Range, error) {
	base := KV(tenant)
	switch {
	case prefix && rangeEnd != "":
		return Range{}, fmt.Errorf("%w: give either prefix or range_end, not both", ErrInvalidRange)
	case prefix:
		return Range{Start: base + key, End: PrefixEnd(base + key)}, nil
	case rangeEnd == "\x00":
		return Range{Start: base + key, End: PrefixEnd(base)}, nil
	case rangeEnd != "":
		if key == "" {
			// [base, base+rangeEnd) is still inside the tenant.
			return Range{Start: base, End: base + rangeEnd}, nil
		}
		return Range{Start: base + key, End: base + rangeEnd}, nil
	case key == "":
		return Range{}, fmt.Errorf("%w: name a key, or use a prefix", ErrEmptyKey)
	default:
		return Range{Start: base + key}, nil
	}
}

// PrefixEnd is the first key after every key starting with p, or "" when
// there is none (p is empty or all 0xff bytes).
func PrefixEnd(p string) string {
	b := []byte(p)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return string(b[:i+1])
		}
	}
	return ""
}

// StripKV returns a physical key of the tenant's KV space relative to that
// space. ok is false for any other key, which a caller must never see.
func StripKV(tenant, physical string) (string, bool) {
	return strings.CutPrefix(physical, KV(tenant))
}

// Match reports whether rel starts with one of the sorted prefixes.
func Match(prefixes []string, rel string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(rel, p) {
			return true
		}
	}
	return false
}
