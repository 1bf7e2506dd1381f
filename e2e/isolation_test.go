package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/keys"
)

// isolationKeys are the keys the property test draws from: the edges of
// range clamping (empty, NUL, the largest code point, "abc" against
// "abc/", slashes, dots).
var isolationKeys = []string{
	"a", "ab", "abc", "abc/", "abc/d", "abd", "b", "/", "//", "/routes/1",
	"\x00", "a\x00", "z\u00ff", "\U0010FFFF", "\U0010FFFF\U0010FFFF", "../x", "kv", "fence",
}

// model is what one tenant should see: the keys it wrote.
type model map[string]string

// inRange applies the proxy's range rules to a key of the model.
func inRange(k, key, end string, prefix bool) bool {
	switch {
	case prefix:
		return strings.HasPrefix(k, key)
	case end == "\x00":
		return k >= key
	case end != "":
		return k >= key && k < end
	default:
		return k == key
	}
}

func (m model) keys(key, end string, prefix bool) []string {
	var out []string
	for k := range m {
		if inRange(k, key, end, prefix) {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// TestTenantsNeverSeeEachOthersData drives random puts, deletes, ranges and
// transactions from tenants sharing a shard and a tenant on another shard,
// and checks every response and every subscription against a model of what
// that tenant wrote, and the shard's physical keys against the models.
func TestTenantsNeverSeeEachOthersData(t *testing.T) {
	sys := startSystem(t, 2)
	ctx := context.Background()
	// "ab", "abc" and "abc-2" share name prefixes; over two shards, at
	// least two of them share a shard. Values are "<tenant>|<step>".
	tenants := []string{"abc", "abc-2", "ab"}
	for _, name := range tenants {
		if _, err := sys.ten.CreateTenant(ctx, &confettipb.CreateTenantRequest{Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	cacheCli, _ := sys.startCache(t, "cache")
	models := map[string]model{}
	watchers := map[string]*watcher{}
	for _, name := range tenants {
		models[name] = model{}
		watchers[name] = watch(t, cacheCli, name, []string{"kv/"}, "")
	}
	rng := rand.New(rand.NewPCG(1, 2))
	pick := func() string { return isolationKeys[rng.IntN(len(isolationKeys))] }
	rangeArgs := func() (key, end string, prefix bool) {
		switch rng.IntN(4) {
		case 0:
			return pick(), "", false
		case 1:
			return []string{"", "a", "abc", "abc/", "\U0010FFFF"}[rng.IntN(5)], "", true
		case 2:
			return pick(), "\x00", false
		default:
			a, b := pick(), pick()
			if a > b {
				a, b = b, a
			}
			return a, b, false
		}
	}
	check := func(step int, tenant string, got []*confettipb.KeyValue, want []string) {
		t.Helper()
		var names []string
		for _, kv := range got {
			names = append(names, kv.Key)
			if v, ok := models[tenant][kv.Key]; !ok || v != string(kv.Value) {
				t.Fatalf("step %d: tenant %s read %q=%q, which it never wrote (model %q)", step, tenant, kv.Key, kv.Value, v)
			}
		}
		if !slices.Equal(names, want) {
			t.Fatalf("step %d: tenant %s read keys %q, want %q", step, tenant, names, want)
		}
	}
	for step := 0; step < 400; step++ {
		tenant := tenants[rng.IntN(len(tenants))]
		m := models[tenant]
		switch op := rng.IntN(10); {
		case op < 4:
			k, v := pick(), fmt.Sprintf("%s|%d", tenant, step)
			if _, err := sys.kv.Put(ctx, &confettipb.PutRequest{Tenant: tenant, Key: k, Value: []byte(v)}); err != nil {
				t.Fatalf("step %d: put %q: %v", step, k, err)
			}
			m[k] = v
		case op < 5:
			key, end, prefix := rangeArgs()
			if key == "" && end == "" && !prefix {
				continue
			}
			resp, err := sys.kv.DeleteRange(ctx, &confettipb.DeleteRangeRequest{Tenant: tenant, Key: key, RangeEnd: end, Prefix: prefix, PrevKv: true})
			if err != nil {
				t.Fatalf("step %d: delete %q..%q prefix=%v: %v", step, key, end, prefix, err)
			}
			want := m.keys(key, end, prefix)
			check(step, tenant, resp.PrevKvs, want)
			for _, k := range want {
				delete(m, k)
			}
		case op < 8:
			key, end, prefix := rangeArgs()
			if key == "" && end == "" && !prefix {
				continue
			}
			resp, err := sys.kv.Range(ctx, &confettipb.RangeRequest{Tenant: tenant, Key: key, RangeEnd: end, Prefix: prefix})
			if err != nil {
				t.Fatalf("step %d: range %q..%q prefix=%v: %v", step, key, end, prefix, err)
			}
			check(step, tenant, resp.Kvs, m.keys(key, end, prefix))
		default:
			// A transaction: compare a key's existence, put in one branch,
			// read a range in both.
			k, v := pick(), fmt.Sprintf("%s|txn-%d", tenant, step)
			key, end, prefix := rangeArgs()
			if key == "" && end == "" && !prefix {
				prefix = true
			}
			get := &confettipb.RequestOp{Request: &confettipb.RequestOp_Range{Range: &confettipb.RangeRequest{Key: key, RangeEnd: end, Prefix: prefix}}}
			resp, err := sys.kv.Txn(ctx, &confettipb.TxnRequest{
				Tenant:  tenant,
				Compare: []*confettipb.Compare{{Key: k, Target: confettipb.Compare_CREATE, TargetUnion: &confettipb.Compare_CreateRevision{CreateRevision: 0}}},
				Success: []*confettipb.RequestOp{{Request: &confettipb.RequestOp_Put{Put: &confettipb.PutRequest{Key: k, Value: []byte(v)}}}, get},
				Failure: []*confettipb.RequestOp{get},
			})
			if err != nil {
				t.Fatalf("step %d: txn: %v", step, err)
			}
			_, exists := m[k]
			if resp.Succeeded == exists {
				t.Fatalf("step %d: txn on %q succeeded=%v, but the key exists=%v for tenant %s", step, k, resp.Succeeded, exists, tenant)
			}
			if resp.Succeeded {
				m[k] = v
			}
			check(step, tenant, resp.Responses[len(resp.Responses)-1].GetRange().GetKvs(), m.keys(key, end, prefix))
		}
	}

	// Every subscriber converges on exactly its own tenant's keys.
	for _, name := range tenants {
		want := map[string]string{}
		for k, v := range models[name] {
			want["kv/"+k] = v
		}
		watchers[name].waitFor(t, "subscriber of "+name+" to hold its tenant's keys", func(s map[string]string) bool {
			if len(s) != len(want) {
				return false
			}
			for k, v := range want {
				if s[k] != v {
					return false
				}
			}
			return true
		})
		_, events, _, _, _, _ := watchers[name].view()
		for _, e := range events {
			if !strings.Contains(e, "="+name+"|") && !strings.Contains(e, " DELETED@") {
				t.Fatalf("subscriber of %s received %s", name, e)
			}
		}
	}

	// On every shard, each key lies in one tenant's KV space and matches
	// that tenant's model.
	for _, id := range sys.tc.ShardIDs {
		resp, err := sys.tc.ShardClient(t, id).Get(ctx, "", clientv3.WithFromKey())
		if err != nil {
			t.Fatal(err)
		}
		for _, kv := range resp.Kvs {
			tenant, rel, ok := keys.Split(string(kv.Key))
			if !ok {
				t.Fatalf("shard %s holds %q outside every tenant", id, kv.Key)
			}
			k, ok := strings.CutPrefix(rel, keys.SpaceKV)
			if !ok {
				t.Fatalf("shard %s holds %q outside tenant %s's KV space", id, kv.Key, tenant)
			}
			if models[tenant][k] != string(kv.Value) {
				t.Fatalf("shard %s holds %q=%q, tenant %s's model says %q", id, kv.Key, kv.Value, tenant, models[tenant][k])
			}
		}
	}
}
