package etcdapi

import (
	"strings"
	"testing"

	"github.com/confetti-io/confetti/internal/keys"
)

// physicalRange is the physical range the native API serves for an etcd
// key and range end.
func physicalRange(t testing.TB, tenant string, key, end []byte) (keys.Range, bool) {
	r, err := nativeRange(key, end)
	if err != nil {
		return keys.Range{}, false
	}
	pr, err := keys.KVRange(tenant, r.key, r.end, r.prefix)
	if err != nil {
		return keys.Range{}, false
	}
	return pr, true
}

func contains(r keys.Range, phys string) bool {
	if r.End == "" {
		return phys == r.Start
	}
	return phys >= r.Start && phys < r.End
}

// FuzzRangeClamp checks the translation of etcd ranges against the
// reference: a tenant key is in the physical range exactly when etcd
// would put it in [key, end), and no physical key outside the tenant's
// KV space is ever in it, whatever the key and end.
func FuzzRangeClamp(f *testing.F) {
	for _, s := range [][3]string{
		{"", "\x00", "/a"}, {"\x00", "\x00", ""}, {"/a", "", "/a"}, {"/a", "/b", "/a/1"},
		{"/a\xff", "/b", "/a\xff\x01"}, {"\xff", "\x00", "\xff\xff"}, {"a", "b", "a"}, {"/r/", "/r0", "/r/x"},
		{"\x7f", "\x80", "\x7f1"}, {"b", "a", "a"}, {"", "", ""}, {"", "/z", "/a"},
	} {
		f.Add([]byte(s[0]), []byte(s[1]), s[2], "/confetti/t/acme/kv/x")
	}
	const tenant = "acme"
	f.Fuzz(func(t *testing.T, key, end []byte, probe string, phys string) {
		r, ok := physicalRange(t, tenant, key, end)
		if !ok {
			return
		}
		base := keys.KV(tenant)
		if !strings.HasPrefix(r.Start, base) || (r.End != "" && r.End > keys.PrefixEnd(base)) {
			t.Fatalf("range %q..%q of key %q end %q leaves the tenant's KV space", r.Start, r.End, key, end)
		}
		if contains(r, phys) && !strings.HasPrefix(phys, base) {
			t.Fatalf("physical key %q of another space is in the range of key %q end %q", phys, key, end)
		}
		if got, want := contains(r, base+probe), inRange(key, end, probe); got != want {
			t.Fatalf("key %q in range of key %q end %q: native %v, etcd %v", probe, key, end, got, want)
		}
	})
}

func TestWatchPrefixCoversTheRange(t *testing.T) {
	for _, c := range []struct{ key, end, want string }{
		{"/a", "", "/a"}, {"/routes/", "/routes0", "/routes"}, {"\x00", "\x00", ""},
		{"/a", "/b", "/"}, {"é", "ê", "\xc3"[:0]}, {"/x\xff", "/y", "/"},
	} {
		if got := watchPrefix([]byte(c.key), []byte(c.end)); got != c.want {
			t.Errorf("watchPrefix(%q, %q) = %q, want %q", c.key, c.end, got, c.want)
		}
	}
}
