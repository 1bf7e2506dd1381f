package bench

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestUpdateValuesParseBackAndWarmupsAreNotCounted(t *testing.T) {
	at := time.Unix(1795306405, 123456789)
	tests := []struct {
		name    string
		value   string
		wantSeq int64
		wantOK  bool
	}{
		{name: "measured", value: updateValue(42, at), wantSeq: 42, wantOK: true},
		{name: "warm-up", value: warmupValue(3)},
		{name: "empty", value: ""},
		{name: "not a time", value: "7:soon"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			seq, got, ok := parseValue([]byte(tt.value))
			if ok != tt.wantOK || seq != tt.wantSeq || (ok && !got.Equal(at)) {
				t.Errorf("parseValue(%q) = %d, %v, %v; want %d, %v, %v", tt.value, seq, got, ok, tt.wantSeq, at, tt.wantOK)
			}
		})
	}
}

func TestSplitSpecsCoversEverySubscriberOnceWithItsOwnSourceAddress(t *testing.T) {
	base := childSpec{Mode: modeFanout, StreamsPerConn: 10, Tenants: []childTenant{
		{Name: "a", Addrs: []string{"n1", "n2"}, Expect: 3},
		{Name: "b", Addrs: []string{"n1", "n2"}, Expect: 1},
	}}
	specs := splitSpecs(base, 105, 4)
	var got []int
	var ips []string
	conns := 0
	var expected int64
	for _, s := range specs {
		got = append(got, s.Subscribers)
		ips = append(ips, s.LocalIP)
		conns += connsOf(s)
		expected += expectedOf(s)
	}
	if diff := cmp.Diff([]int{27, 26, 26, 26}, got); diff != "" {
		t.Errorf("subscribers per process (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"}, ips); diff != "" {
		t.Errorf("source addresses (-want +got):\n%s", diff)
	}
	// Each process spreads about 26 subscribers over two addresses: two
	// connections of at most ten streams per address.
	if conns != 12+4 {
		t.Errorf("connections = %d, want 16", conns)
	}
	// 53 subscribers follow tenant a (3 updates), 52 tenant b (1).
	if expected != 53*3+52 {
		t.Errorf("expected deliveries = %d, want %d", expected, 53*3+52)
	}
}

func TestLastOfFindsEachTenantsLastUpdateOfARoundRobin(t *testing.T) {
	tests := []struct {
		name           string
		i, k, from, to int
		want           int64
	}{
		{name: "one tenant", i: 0, k: 1, from: 3, to: 8, want: 7},
		{name: "second of three", i: 1, k: 3, from: 0, to: 6, want: 4},
		{name: "none in range", i: 2, k: 3, from: 3, to: 5, want: -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := lastOf(tt.i, tt.k, tt.from, tt.to); got != tt.want {
				t.Errorf("lastOf(%d, %d, %d, %d) = %d, want %d", tt.i, tt.k, tt.from, tt.to, got, tt.want)
			}
		})
	}
}
