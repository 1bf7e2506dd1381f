package keys

import (
	"errors"
	"strings"
	"testing"
)

func TestValidSvcName(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		ok   bool
	}{
		{name: "simple", in: "api", ok: true},
		{name: "every allowed class", in: "Api_v2.internal-1", ok: true},
		{name: "max length", in: strings.Repeat("a", 128), ok: true},
		{name: "too long", in: strings.Repeat("a", 129)},
		{name: "empty", in: ""},
		{name: "slash", in: "a/b"},
		{name: "space", in: "a b"},
		{name: "colon", in: "host:80"},
		{name: "non-ascii", in: "dienst-ü"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidSvcName("service", tc.in)
			if tc.ok != (err == nil) {
				t.Fatalf("ValidSvcName(%q) = %v, want ok=%v", tc.in, err, tc.ok)
			}
			if err != nil && (!errors.Is(err, ErrInvalidName) || !strings.Contains(err.Error(), "[a-zA-Z0-9._-]{1,128}")) {
				t.Fatalf("error %v is not ErrInvalidName naming the pattern", err)
			}
		})
	}
}

func TestSvcAndLeaseOwnerKeys(t *testing.T) {
	for _, tc := range []struct {
		name    string
		got     string
		want    string
		visible bool
	}{
		{name: "instance", got: Svc("acme", "api", "i-1"), want: "/confetti/t/acme/svc/api/i-1", visible: true},
		{name: "service prefix", got: SvcPrefix("acme", "api"), want: "/confetti/t/acme/svc/api/", visible: true},
		{name: "lease owner", got: LeaseOwner("acme", 7587886521), want: "/confetti/t/acme/lease/7587886521", visible: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Fatalf("key = %q, want %q", tc.got, tc.want)
			}
			tenant, rel, ok := Split(tc.got)
			if !ok || tenant != "acme" {
				t.Fatalf("Split(%q) = %q, %q, %v", tc.got, tenant, rel, ok)
			}
			if Visible(rel) != tc.visible {
				t.Fatalf("Visible(%q) = %v, want %v", rel, !tc.visible, tc.visible)
			}
		})
	}
	if strings.HasPrefix(SvcPrefix("acme", "api2"), SvcPrefix("acme", "api")) {
		t.Fatal("the prefix of service api covers service api2")
	}
}
