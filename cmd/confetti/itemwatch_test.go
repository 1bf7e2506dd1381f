package main

import (
	"slices"
	"strings"
	"testing"

	pb "github.com/confetti-io/confetti/api/confettipb"
)

func itemKV(version int64, gray, content string) *pb.KeyValue {
	return &pb.KeyValue{Key: "routes", Kind: pb.KeyValue_ITEM, Value: []byte(content), ModRevision: 10 + version,
		Item: &pb.ItemRef{Item: "routes", Version: version, GrayId: gray}}
}

// TestItemWatchNackPrintsEachRefusedVersion has item watch --nack refuse
// the stable version of the state and a gray version that follows: each
// refusal is a line, and since nothing was accepted the item has no
// version.
func TestItemWatchNackPrintsEachRefusedVersion(t *testing.T) {
	node := &scriptedCache{hold: true, script: []*pb.SubscribeResponse{
		resetMsg(0, true, "t1", itemKV(1, "", `{"v":1}`)),
		eventsMsg(&pb.Txn{Revision: 12, Token: "t12", Events: []*pb.Event{{Type: pb.Event_PUT, Kv: itemKV(2, "v2", `{"v":2}`)}}}),
	}}
	out, errOut, err := runCLI(t, "item", "watch", "--tenant", "acme", "routes", "--instance-id", "gw-c", "--nack", "bad upstream",
		"--count", "3", "--cache-endpoints", startCache(t, node))
	if err != nil {
		t.Fatalf("item watch: %v (stderr %q)", err, errOut)
	}
	got := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	slices.Sort(got)
	want := []string{
		"gw-c: no version of routes",
		"gw-c: routes v1 (stable) refused: bad upstream",
		"gw-c: routes v2 (gray v2) refused: bad upstream",
	}
	if !slices.Equal(got, want) {
		t.Errorf("item watch --nack printed\n%s\nwant the lines\n%s", out, strings.Join(want, "\n"))
	}
}
