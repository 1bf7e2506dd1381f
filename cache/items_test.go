package cache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/keys"
	"github.com/confetti-io/confetti/internal/release"
	"github.com/confetti-io/confetti/internal/testcluster"
)

// publishVersion writes an item version the way the proxy stores it.
func publishVersion(t *testing.T, cli *clientv3.Client, tenant, item string, version int64, content string) {
	t.Helper()
	sum := sha256.Sum256([]byte(content))
	b, err := proto.Marshal(&confettipb.ItemVersion{Tenant: tenant, Item: item, Version: version, Content: []byte(content), ContentHash: hex.EncodeToString(sum[:])})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(context.Background(), keys.ItemVersion(tenant, item, version), string(b)); err != nil {
		t.Fatal(err)
	}
}

// setRelease writes an item's release record the way the proxy stores it,
// and returns the revision of the write.
func setRelease(t *testing.T, cli *clientv3.Client, tenant, item string, rel *confettipb.Release) int64 {
	t.Helper()
	b, err := proto.Marshal(rel)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Put(context.Background(), keys.ItemRelease(tenant, item), string(b))
	if err != nil {
		t.Fatal(err)
	}
	return resp.Header.Revision
}

func content(item string, version int64) string {
	return fmt.Sprintf(`{"item":%q,"v":%d}`, item, version)
}

// itemOf is what a subscriber holds of an item: its version and gray, or
// zero.
func (s *subscriber) itemOf(item string) (int64, string, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.items[keys.ItemKey(item)]
	if r == nil {
		return 0, "", s.state[keys.ItemKey(item)]
	}
	return r.Version, r.GrayId, s.state[keys.ItemKey(item)]
}

// eventsOf counts the events a subscriber received for a key.
func (s *subscriber) eventsOf(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, ev := range s.events {
		if relKey(ev.Kv) == key {
			n++
		}
	}
	return n
}

func TestReleasesResolvePerSubscriberAndReachOnlyTheAffected(t *testing.T) {
	f := newFixture(t, 1, "acme")
	cli := f.shardOf(t, "acme")
	const item, n = "app.json", 1000
	for v := int64(1); v <= 3; v++ {
		publishVersion(t, cli, "acme", item, v, content(item, v))
	}
	// The raw version keys are never what subscribers see.
	rel := &confettipb.Release{Tenant: "acme", Item: item, Stable: 1}
	setRelease(t, cli, "acme", item, rel)
	node := startNode(t, f.tc, "n1", Config{})

	zones, tiers := []string{"a", "b", "c"}, []string{"edge", "core"}
	ids := make([]*confettipb.Identity, n)
	subs := make([]*subscriber, n)
	for i := range subs {
		ids[i] = &confettipb.Identity{InstanceId: "gw-" + strconv.Itoa(i), Labels: map[string]string{"zone": zones[i%3], "tier": tiers[i%2]}}
		subs[i] = subscribeAs(t, node, "acme", []string{"cfg/", "kv/"}, "", ids[i])
	}
	// held is each subscriber's version before a step, counted its item
	// events before the step.
	held, counted := make([]int64, n), make([]int, n)
	for i := range held {
		held[i] = 1
	}
	check := func(step string) {
		t.Helper()
		want := make([]int64, n)
		for i, id := range ids {
			want[i], _ = release.Resolve(rel, id)
		}
		for i, s := range subs {
			testcluster.WaitFor(t, step+": subscriber "+ids[i].InstanceId+" holds its version", func() bool {
				v, _, body := s.itemOf(item)
				return v == want[i] && body == content(item, want[i])
			})
		}
		// A plain write after the step reaches everyone, so everything the
		// step sent has arrived: each subscriber got an event for the item
		// exactly when its version changed.
		rev := put(t, cli, "acme", "kv/after-"+step, step)
		for i, s := range subs {
			testcluster.WaitFor(t, step+": subscriber sees the write after the step", func() bool {
				s.mu.Lock()
				defer s.mu.Unlock()
				return s.rev >= rev
			})
			if _, _, _, err := s.snapshot(); err != nil {
				t.Fatalf("%s: subscriber %d broke the contract: %v", step, i, err)
			}
		}
		changed, unchanged := 0, 0
		for i, s := range subs {
			got := s.eventsOf(keys.ItemKey(item))
			wantEvents := 0
			if want[i] != held[i] {
				wantEvents = 1
				changed++
			} else {
				unchanged++
			}
			if got-counted[i] != wantEvents {
				t.Fatalf("%s: subscriber %s got %d item events in the step, want %d", step, ids[i].InstanceId, got-counted[i], wantEvents)
			}
			counted[i], held[i] = got, want[i]
		}
		t.Logf("%s: %d subscribers changed version, %d did not", step, changed, unchanged)
	}
	check("initial")

	rel.Grays = []*confettipb.Gray{{Id: "labels", Version: 2, Priority: 10, Rule: &confettipb.Rule{Rule: &confettipb.Rule_Selector{Selector: "zone in (a,b),tier!=edge"}}}}
	setRelease(t, cli, "acme", item, rel)
	check("gray-labels")

	rel.Grays = append(rel.Grays, &confettipb.Gray{Id: "pct", Version: 3, Priority: 20, Rule: &confettipb.Rule{Rule: &confettipb.Rule_BasisPoints{BasisPoints: 3000}}})
	setRelease(t, cli, "acme", item, rel)
	check("gray-percent")

	rel.Stable, rel.Grays = 2, rel.Grays[1:]
	setRelease(t, cli, "acme", item, rel)
	check("promote-labels")

	rel.Grays = nil
	setRelease(t, cli, "acme", item, rel)
	check("abort-percent")

	rel.Stable = 1
	setRelease(t, cli, "acme", item, rel)
	check("rollback")
}

func TestResumeAcrossReleaseChangesReplays(t *testing.T) {
	f := newFixture(t, 1, "acme")
	cli := f.shardOf(t, "acme")
	const item = "routes.yaml"
	for v := int64(1); v <= 2; v++ {
		publishVersion(t, cli, "acme", item, v, content(item, v))
	}
	rel := &confettipb.Release{Tenant: "acme", Item: item, Stable: 1}
	setRelease(t, cli, "acme", item, rel)
	n1, n2 := startNode(t, f.tc, "n1", Config{}), startNode(t, f.tc, "n2", Config{})
	canary := &confettipb.Identity{InstanceId: "canary-1", Labels: map[string]string{"ring": "canary"}}
	other := &confettipb.Identity{InstanceId: "main-1", Labels: map[string]string{"ring": "main"}}

	s := subscribeAs(t, n1, "acme", nil, "", canary)
	testcluster.WaitFor(t, "the canary holds v1", func() bool { v, _, _ := s.itemOf(item); return v == 1 })
	_, token, _, _ := s.snapshot()
	s.close()

	// While it is away: a gray that selects it, a write, and a gray for
	// others that does not change its version.
	rel.Grays = []*confettipb.Gray{{Id: "canary", Version: 2, Priority: 1, Rule: &confettipb.Rule{Rule: &confettipb.Rule_Selector{Selector: "ring=canary"}}}}
	setRelease(t, cli, "acme", item, rel)
	put(t, cli, "acme", "kv/k", "v")
	rel.Grays = append(rel.Grays, &confettipb.Gray{Id: "ids", Version: 2, Priority: 0, Rule: &confettipb.Rule{Rule: &confettipb.Rule_Instances{Instances: &confettipb.InstanceList{Ids: []string{"main-9"}}}}})
	setRelease(t, cli, "acme", item, rel)

	// Resumed on the other node from the token: a replay, resolved for it.
	r := subscribeAs(t, n2, "acme", nil, token, canary)
	testcluster.WaitFor(t, "the canary holds v2 after resuming", func() bool {
		v, gray, body := r.itemOf(item)
		return v == 2 && gray == "canary" && body == content(item, 2)
	})
	testcluster.WaitFor(t, "the write replayed", func() bool {
		st, _, _, _ := r.snapshot()
		return st["kv/k"] == "v"
	})
	if _, _, resets, err := r.snapshot(); resets != 0 || err != nil {
		t.Fatalf("resume across release changes: %d resets, err %v; want a replay", resets, err)
	}
	if n := r.eventsOf(keys.ItemKey(item)); n != 1 {
		t.Fatalf("the canary got %d item events, want 1", n)
	}

	// A token is for a view, not an identity: the canary's first token
	// (v1) resumes by replay for a gateway that also held v1 then, but its
	// token at v2 is for another view than that gateway's, which gets a
	// Reset with its own version.
	same := subscribeAs(t, n2, "acme", nil, token, other)
	testcluster.WaitFor(t, "the other gateway replays from the v1 token", func() bool {
		st, _, _, _ := same.snapshot()
		return st["kv/k"] == "v"
	})
	if v, _, _ := same.itemOf(item); v != 0 {
		t.Fatalf("the other gateway was sent v%d on replay; its version did not change", v)
	}
	if _, _, resets, _ := same.snapshot(); resets != 0 {
		t.Fatalf("the other gateway got %d resets for a token of its own view", resets)
	}
	_, token, _, _ = r.snapshot()
	o := subscribeAs(t, n2, "acme", nil, token, other)
	testcluster.WaitFor(t, "the other gateway holds v1 from a Reset", func() bool {
		v, _, _ := o.itemOf(item)
		_, _, resets, _ := o.snapshot()
		return v == 1 && resets == 1
	})
}

func TestRolloutCountsAcksPerGateway(t *testing.T) {
	f := newFixture(t, 1, "acme")
	cli := f.shardOf(t, "acme")
	const item = "app.json"
	publishVersion(t, cli, "acme", item, 1, content(item, 1))
	publishVersion(t, cli, "acme", item, 2, content(item, 2))
	rel := &confettipb.Release{Tenant: "acme", Item: item, Stable: 1}
	setRelease(t, cli, "acme", item, rel)
	node := startNode(t, f.tc, "n1", Config{})
	subs := map[string]*subscriber{}
	for _, id := range []string{"ok", "nack", "silent"} {
		subs[id] = subscribeAs(t, node, "acme", []string{"cfg/"}, "", &confettipb.Identity{InstanceId: id})
	}
	ack := func(id string, version int64, ok bool, msg string) {
		t.Helper()
		if err := subs[id].stream.Send(&confettipb.SubscribeRequest{Request: &confettipb.SubscribeRequest_Ack{Ack: &confettipb.Ack{Item: item, Version: version, Ok: ok, Error: msg}}}); err != nil {
			t.Fatal(err)
		}
	}
	states := func() map[string]string {
		resp, err := node.cli.Rollout(context.Background(), &confettipb.RolloutRequest{Tenant: "acme", Item: item})
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, g := range resp.Gateways {
			out[g.InstanceId] = fmt.Sprintf("v%d %s %s", g.Version, g.State, g.Error)
		}
		return out
	}
	waitStates := func(want map[string]string) {
		t.Helper()
		testcluster.WaitFor(t, fmt.Sprintf("rollout %v", want), func() bool {
			got := states()
			if len(got) != len(want) {
				return false
			}
			for k, v := range want {
				if got[k] != v {
					return false
				}
			}
			return true
		})
	}
	waitStates(map[string]string{"ok": "v1 PENDING ", "nack": "v1 PENDING ", "silent": "v1 PENDING "})
	ack("ok", 1, true, "")
	ack("nack", 1, false, "schema: missing field")
	waitStates(map[string]string{"ok": "v1 RUNNING ", "nack": "v1 NACKED schema: missing field", "silent": "v1 PENDING "})

	// A new stable version is pending everywhere until acked; a late ack
	// of the old version changes nothing.
	rel.Stable = 2
	setRelease(t, cli, "acme", item, rel)
	waitStates(map[string]string{"ok": "v2 PENDING ", "nack": "v2 PENDING ", "silent": "v2 PENDING "})
	ack("ok", 1, true, "")
	ack("ok", 2, true, "")
	waitStates(map[string]string{"ok": "v2 RUNNING ", "nack": "v2 PENDING ", "silent": "v2 PENDING "})

	// A gateway that goes away is no longer counted here.
	subs["silent"].close()
	waitStates(map[string]string{"ok": "v2 RUNNING ", "nack": "v2 PENDING "})
}
