//go:build chaosplant

package cache

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/confetti-io/confetti/internal/keys"
	"github.com/confetti-io/confetti/internal/plant"
	"github.com/confetti-io/confetti/internal/testcluster"
	"github.com/confetti-io/confetti/internal/watchcheck"
)

// checkPlanted follows one subscriber through two rounds of transactions
// made by write: the first with no bug on, the second with bug on. It
// requires the bug to fire in the second round and returns watchcheck's
// verdict on the stream after each round.
func checkPlanted(t *testing.T, bug string, write func(cli *clientv3.Client, key string) (int64, error)) (off, on error) {
	t.Helper()
	plant.Set()
	t.Cleanup(func() { plant.Set() })
	f := newFixture(t, 1, "acme")
	cli := f.shardOf(t, "acme")
	ref := startReference(t, cli)
	n := startNode(t, f.tc, "node-1", Config{ProgressInterval: 100 * time.Millisecond})
	c := subscribeChecked(t, n, "acme", nil, false)

	round := func(r int) error {
		t.Helper()
		var rev int64
		for i := 0; i < 2*plant.FireAt; i++ {
			var err error
			if rev, err = write(cli, fmt.Sprintf("kv/r%d/k%02d", r, i)); err != nil {
				t.Fatal(err)
			}
		}
		testcluster.WaitFor(t, fmt.Sprintf("subscriber at revision %d", rev), func() bool {
			got, err := TokenRevision(c.stream.LastToken())
			return err == nil && got >= rev
		})
		_, err := watchcheck.Check(ref, c.stream, TokenRevision, watchcheck.Options{})
		return err
	}
	off = round(0)
	plant.Set(bug)
	on = round(1)
	if !plant.Fired(bug) {
		t.Fatalf("%s never fired", bug)
	}
	return off, on
}

// putOne writes one key in its own transaction.
func putOne(cli *clientv3.Client, key string) (int64, error) {
	resp, err := cli.Put(context.Background(), keys.Tenant("acme")+key, "v")
	if err != nil {
		return 0, err
	}
	return resp.Header.Revision, nil
}

// putTwo writes two keys in one transaction.
func putTwo(cli *clientv3.Client, key string) (int64, error) {
	resp, err := cli.Txn(context.Background()).Then(
		clientv3.OpPut(keys.Tenant("acme")+key+"/a", "v"),
		clientv3.OpPut(keys.Tenant("acme")+key+"/b", "v"),
	).Commit()
	if err != nil {
		return 0, err
	}
	return resp.Header.Revision, nil
}

// requireCaught fails unless the stream passed the checker with the bug
// off and broke the named guarantee with it on.
func requireCaught(t *testing.T, off, on error, guarantee string) {
	t.Helper()
	if off != nil {
		t.Fatalf("with no bug on, the checker found: %v", off)
	}
	if on == nil {
		t.Fatal("the checker missed the planted bug")
	}
	if !strings.Contains(on.Error(), guarantee+":") {
		t.Fatalf("the checker found %v; want a violation of %s", on, guarantee)
	}
	t.Logf("caught: %.200v", on)
}

func TestPlantedSkipEventIsCaught(t *testing.T) {
	off, on := checkPlanted(t, plant.SkipEvent, putOne)
	requireCaught(t, off, on, "reliable")
}

func TestPlantedAdvanceTokenIsCaught(t *testing.T) {
	off, on := checkPlanted(t, plant.AdvanceToken, putOne)
	requireCaught(t, off, on, "reliable")
}

func TestPlantedDropSecondEventIsCaught(t *testing.T) {
	off, on := checkPlanted(t, plant.DropSecondEvent, putTwo)
	requireCaught(t, off, on, "atomic")
}
