package keys

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestValidName(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		ok   bool
	}{
		{name: "simple", in: "acme", ok: true},
		{name: "digits and dash", in: "team-42", ok: true},
		{name: "max length", in: strings.Repeat("a", 63), ok: true},
		{name: "too long", in: strings.Repeat("a", 64)},
		{name: "empty", in: ""},
		{name: "upper case", in: "Acme"},
		{name: "leading dash", in: "-acme"},
		{name: "slash", in: "a/b"},
		{name: "dot", in: "a.b"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidName("tenant", tc.in)
			if tc.ok != (err == nil) {
				t.Fatalf("ValidName(%q) = %v, want ok=%v", tc.in, err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalidName) {
				t.Fatalf("error %v is not ErrInvalidName", err)
			}
		})
	}
}

func TestKVRangeStaysInsideTenant(t *testing.T) {
	base := "/confetti/t/acme/kv/"
	for _, tc := range []struct {
		name     string
		key, end string
		prefix   bool
		want     Range
		wantErr  error
	}{
		{name: "single key", key: "a", want: Range{Start: base + "a"}},
		{name: "prefix", key: "abc", prefix: true, want: Range{Start: base + "abc", End: base + "abd"}},
		{name: "prefix with slash", key: "abc/", prefix: true, want: Range{Start: base + "abc/", End: base + "abc0"}},
		{name: "empty prefix is the whole space", key: "", prefix: true, want: Range{Start: base, End: "/confetti/t/acme/kv0"}},
		{name: "prefix ending in 0xff", key: "a\xff", prefix: true, want: Range{Start: base + "a\xff", End: base + "b"}},
		{name: "prefix of only 0xff", key: "\xff\xff", prefix: true, want: Range{Start: base + "\xff\xff", End: "/confetti/t/acme/kv0"}},
		{name: "range end zero byte", key: "m", end: "\x00", want: Range{Start: base + "m", End: "/confetti/t/acme/kv0"}},
		{name: "explicit range", key: "a", end: "c", want: Range{Start: base + "a", End: base + "c"}},
		{name: "explicit range from empty key", key: "", end: "c", want: Range{Start: base, End: base + "c"}},
		{name: "empty key", key: "", wantErr: ErrEmptyKey},
		{name: "prefix and range end", key: "a", end: "b", prefix: true, wantErr: ErrInvalidRange},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := KVRange("acme", tc.key, tc.end, tc.prefix)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Fatalf("range (-want +got):\n%s", diff)
			}
			// Nothing of another tenant whose name extends this one, nor
			// the tenant's own internal keys, falls inside.
			for _, outside := range []string{"/confetti/t/acme-2/kv/a", "/confetti/t/acme/fence", "/confetti/t/acme/svc/x", "/confetti/t/acmf/kv/", "/confetti/t/acme/kv"} {
				if in(got, outside) {
					t.Fatalf("range %q..%q contains %q", got.Start, got.End, outside)
				}
			}
		})
	}
}

func in(r Range, k string) bool {
	if r.End == "" {
		return k == r.Start
	}
	return k >= r.Start && k < r.End
}

func TestSplit(t *testing.T) {
	for _, tc := range []struct {
		name, in, tenant, rel string
		ok                    bool
	}{
		{name: "kv key", in: "/confetti/t/acme/kv/a/b", tenant: "acme", rel: "kv/a/b", ok: true},
		{name: "fence", in: "/confetti/t/acme/fence", tenant: "acme", rel: "fence", ok: true},
		{name: "outside root", in: "/other/acme/kv/a"},
		{name: "no tenant", in: "/confetti/t//kv"},
		{name: "tenant only", in: "/confetti/t/acme"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tenant, rel, ok := Split(tc.in)
			if ok != tc.ok || tenant != tc.tenant || rel != tc.rel {
				t.Fatalf("Split(%q) = %q, %q, %v; want %q, %q, %v", tc.in, tenant, rel, ok, tc.tenant, tc.rel, tc.ok)
			}
		})
	}
}

func TestScope(t *testing.T) {
	for _, tc := range []struct {
		name                      string
		prefixes, items, services []string
		want                      []string
		bad                       bool
	}{
		{name: "nothing named is everything", want: []string{"cfg/", "kv/", "svc/"}},
		{name: "plain keys as written", prefixes: []string{"/routes/", "/upstreams/"}, want: []string{"kv//routes/", "kv//upstreams/"}},
		{name: "every plain key", prefixes: []string{""}, want: []string{"kv/"}},
		{name: "covered prefixes dropped", prefixes: []string{"/routes/1", "/routes/", "/routes/"}, want: []string{"kv//routes/"}},
		{name: "one item does not cover another", items: []string{"gateway", "gateway2"}, want: []string{"cfg/gateway/", "cfg/gateway2/"}},
		{name: "every item and a service", items: []string{"*", "gateway"}, services: []string{"api"}, want: []string{"cfg/", "svc/api/"}},
		{name: "every service", prefixes: []string{"/a"}, services: []string{"*"}, want: []string{"kv//a", "svc/"}},
		{name: "item with a slash", items: []string{"a/b"}, bad: true},
		{name: "empty item", items: []string{""}, bad: true},
		{name: "bad service", services: []string{"a b"}, bad: true},
		{name: "prefix not UTF-8", prefixes: []string{"\xff"}, bad: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Scope(tc.prefixes, tc.items, tc.services)
			if tc.bad {
				if !errors.Is(err, ErrInvalidPrefix) {
					t.Fatalf("err = %v, want ErrInvalidPrefix", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Fatalf("scope (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPublicAndRelative(t *testing.T) {
	for _, tc := range []struct {
		rel, key string
		kind     Kind
	}{
		{rel: "kv//routes/1", key: "/routes/1", kind: KindKey},
		{rel: "kv/plain", key: "plain", kind: KindKey},
		{rel: "svc/api/i-1", key: "api/i-1", kind: KindService},
		{rel: ItemKey("gateway"), key: "gateway", kind: KindItem},
	} {
		key, kind, ok := Public(tc.rel)
		if !ok || key != tc.key || kind != tc.kind {
			t.Fatalf("Public(%q) = %q, %v, %v; want %q, %v", tc.rel, key, kind, ok, tc.key, tc.kind)
		}
		if back := Relative(key, kind); back != tc.rel {
			t.Fatalf("Relative(%q, %v) = %q, want %q", key, kind, back, tc.rel)
		}
	}
	if _, _, ok := Public("fence"); ok {
		t.Fatal("the fence is public")
	}
}

func TestCheckKeyRefusesKeysThatAreNotUTF8(t *testing.T) {
	for _, tc := range []struct {
		key string
		ok  bool
	}{
		{key: "/routes/1", ok: true},
		{key: "", ok: true},
		{key: "/ünïcode/✓", ok: true},
		{key: "bad\xffkey"},
		{key: "\xc3"},
	} {
		err := CheckKey(tc.key)
		if (err == nil) != tc.ok {
			t.Errorf("CheckKey(%q) = %v, want ok=%v", tc.key, err, tc.ok)
		}
		if err != nil && (!errors.Is(err, ErrInvalidKey) || !strings.Contains(err.Error(), "keys are UTF-8 strings")) {
			t.Errorf("CheckKey(%q) = %v, want ErrInvalidKey saying keys are UTF-8", tc.key, err)
		}
	}
}
