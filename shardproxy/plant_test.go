//go:build chaosplant

package shardproxy

import (
	"fmt"
	"testing"

	pb "github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/keys"
	"github.com/confetti-io/confetti/internal/plant"
)

// TestPlantedAckUnappliedIsCaught acknowledges puts through the proxy and
// reads each from etcd directly: with no bug on every one is there; with
// AckUnapplied on, exactly one acknowledged put is missing.
func TestPlantedAckUnappliedIsCaught(t *testing.T) {
	plant.Set()
	t.Cleanup(func() { plant.Set() })
	c := sharedClusters(t)
	a := newAPI(t, c, Config{})
	tn := a.freshTenant(t, c, "planted")
	ctx := testCtx(t)

	// missing puts 2*FireAt keys and lists those acknowledged but absent
	// from the shard.
	missing := func(round int) []string {
		t.Helper()
		acked := map[string]string{}
		for i := 0; i < 2*plant.FireAt; i++ {
			key, value := fmt.Sprintf("r%d/k%02d", round, i), fmt.Sprint(i)
			resp, err := a.kv.Put(ctx, &pb.PutRequest{Tenant: "planted", Key: key, Value: []byte(value)})
			if err != nil {
				t.Fatalf("put %s: %v", key, err)
			}
			if resp.Header.GetRevision() == 0 || resp.Header.GetShard() != tn.Shard {
				t.Fatalf("put %s acknowledged with header %v", key, resp.Header)
			}
			acked[keys.KV("planted")+key] = value
		}
		raw := c.rawTenantKeys(t, tn.Shard, "planted")
		var out []string
		for k, v := range acked {
			if raw[k] != v {
				out = append(out, k)
			}
		}
		return out
	}
	if lost := missing(0); len(lost) != 0 {
		t.Fatalf("with no bug on, acknowledged puts are missing from etcd: %v", lost)
	}
	plant.Set(plant.AckUnapplied)
	lost := missing(1)
	if !plant.Fired(plant.AckUnapplied) {
		t.Fatal("ack-unapplied never fired")
	}
	if len(lost) != 1 {
		t.Fatalf("with ack-unapplied on, acknowledged puts missing from etcd: %v; want exactly one", lost)
	}
	t.Logf("caught: acknowledged put %s is not in etcd", lost[0])
}
