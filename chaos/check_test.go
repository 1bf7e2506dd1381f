package chaos

import (
	"path/filepath"
	"testing"
	"time"
)

func TestLinearizableAcceptsAndRefuses(t *testing.T) {
	put := func(c int, v string, call, ret int64) Op {
		return Op{Client: c, Tenant: "t", Key: "lin/k0", Kind: "put", Value: v, Call: call, Return: ret, OK: true}
	}
	get := func(c int, v string, call, ret int64) Op {
		return Op{Client: c, Tenant: "t", Key: "lin/k0", Kind: "get", Found: v != "", Got: v, Call: call, Return: ret, OK: true}
	}
	for _, tc := range []struct {
		name    string
		history []Op
		want    string
	}{
		{"reads follow writes", []Op{put(0, "a", 0, 10), get(1, "a", 20, 30), put(0, "b", 40, 50), get(1, "b", 60, 70)}, "Ok"},
		{"a stale read", []Op{put(0, "a", 0, 10), put(0, "b", 20, 30), get(1, "a", 40, 50)}, "Illegal"},
		{"a lost acknowledged write", []Op{put(0, "a", 0, 10), get(1, "", 20, 30)}, "Illegal"},
		{"a write of unknown outcome may apply late", []Op{
			{Client: 0, Tenant: "t", Key: "lin/k0", Kind: "put", Value: "a", Call: 0, Return: 5, Unknown: true, Err: "timeout"},
			get(1, "", 20, 30), get(1, "a", 40, 50)}, "Ok"},
		{"a write of unknown outcome may never apply", []Op{
			{Client: 0, Tenant: "t", Key: "lin/k0", Kind: "put", Value: "a", Call: 0, Return: 5, Unknown: true, Err: "timeout"},
			get(1, "", 20, 30)}, "Ok"},
		{"a refused write never applies", []Op{
			{Client: 0, Tenant: "t", Key: "lin/k0", Kind: "put", Value: "a", Call: 0, Return: 5, Err: "invalid"},
			get(1, "a", 20, 30)}, "Illegal"},
		{"compare-and-swap", []Op{put(0, "a", 0, 10),
			{Client: 1, Tenant: "t", Key: "lin/k0", Kind: "cas", Expect: "a", Value: "b", Call: 20, Return: 30, OK: true, Swapped: true},
			{Client: 2, Tenant: "t", Key: "lin/k0", Kind: "cas", Expect: "a", Value: "c", Call: 40, Return: 50, OK: true, Swapped: false},
			get(1, "b", 60, 70)}, "Ok"},
		{"a swap that could not hold", []Op{put(0, "a", 0, 10),
			{Client: 1, Tenant: "t", Key: "lin/k0", Kind: "cas", Expect: "z", Value: "b", Call: 20, Return: 30, OK: true, Swapped: true}}, "Illegal"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := linearizable(tc.history, filepath.Join(t.TempDir(), "v.html"), 10*time.Second, nil)
			if err != nil {
				t.Fatal(err)
			}
			if string(res) != tc.want {
				t.Fatalf("porcupine says %s, want %s", res, tc.want)
			}
		})
	}
}

func TestAvailabilitySplitsWindowsAndShards(t *testing.T) {
	timeline := []Event{
		{At: 10, Step: 0, Kind: "inject", Fault: "kill shard-a", Shards: []string{"shard-a"}},
		{At: 20, Step: 0, Kind: "healed", Fault: "kill shard-a", Shards: []string{"shard-a"}},
	}
	history := []Op{
		{Tenant: "a", Shard: "shard-a", Call: 5, OK: true},
		{Tenant: "a", Shard: "shard-a", Call: 12},
		{Tenant: "b", Shard: "shard-b", Call: 12, OK: true},
		{Tenant: "a", Shard: "shard-a", Call: 25, OK: true},
		{Tenant: "a", Shard: "shard-a", Call: 26, Ended: true},
	}
	ws := availability(history, timeline, 30)
	if len(ws) != 3 {
		t.Fatalf("windows %+v, want 3", ws)
	}
	if w := ws[1]; w.FaultedOK != 0 || w.FaultedAll != 1 || w.UnfaultedOK != 1 || w.UnfaultedAll != 1 || len(w.Faults) != 1 {
		t.Fatalf("fault window %+v", w)
	}
	if w := ws[2]; w.UnfaultedAll != 1 || w.FaultedAll != 0 {
		t.Fatalf("after heal %+v: the request ended by the run must not count", w)
	}
	per := tenantAvailability(history, timeline, []Tenant{{"a", "shard-a"}, {"b", "shard-b"}})
	if a := per[0]; a.FaultedOK != 0 || a.FaultedAll != 1 || a.CalmOK != 2 || a.CalmAll != 2 || a.OtherFaultAll != 0 {
		t.Fatalf("tenant a %+v", a)
	}
	if b := per[1]; b.OtherFaultOK != 1 || b.OtherFaultAll != 1 || b.FaultedAll != 0 {
		t.Fatalf("tenant b %+v", b)
	}
}
