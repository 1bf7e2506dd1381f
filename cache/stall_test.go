package cache

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/confetti-io/confetti/internal/meta"
	"github.com/confetti-io/confetti/internal/testcluster"
	"github.com/confetti-io/confetti/internal/watchcheck"
)

// freezer forwards TCP connections to a target and can stop passing bytes
// without closing anything: the silent network a stalled watch sees.
type freezer struct {
	lis    net.Listener
	target string

	mu     sync.Mutex
	frozen bool
	thaw   chan struct{}
}

func newFreezer(t *testing.T, target string) *freezer {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{lis: lis, target: target, thaw: make(chan struct{})}
	close(f.thaw)
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go f.forward(c)
		}
	}()
	t.Cleanup(func() { lis.Close() })
	return f
}

func (f *freezer) forward(c net.Conn) {
	u, err := net.Dial("tcp", f.target)
	if err != nil {
		c.Close()
		return
	}
	pipe := func(dst, src net.Conn) {
		defer dst.Close()
		defer src.Close()
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			f.mu.Lock()
			thaw := f.thaw
			f.mu.Unlock()
			<-thaw
			if n > 0 {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}
	go pipe(u, c)
	go pipe(c, u)
}

func (f *freezer) freeze() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.frozen {
		f.frozen, f.thaw = true, make(chan struct{})
	}
}

func (f *freezer) unfreeze() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.frozen {
		f.frozen = false
		close(f.thaw)
	}
}

func (f *freezer) addr() string { return "http://" + f.lis.Addr().String() }

// TestStalledWatchIsRestartedAndCaughtUp silences the network between the
// cache and its shard while writes go on: the source notices no answer to
// its progress requests, restarts, lists again once the network is back,
// and subscribers get the difference as ordinary events.
func TestStalledWatchIsRestartedAndCaughtUp(t *testing.T) {
	tc := testcluster.New(t, 1)
	etcd := tc.Shards["s1"]
	fz := newFreezer(t, strings.TrimPrefix(etcd.Endpoints()[0], "http://"))
	st, _ := tc.NewStore(t)
	ctx := context.Background()
	if _, err := st.AddShard(ctx, meta.Shard{ID: "silent", Endpoints: []string{fz.addr()}}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.SetShardState(ctx, "s1", meta.ShardDraining); err != nil {
		t.Fatal(err)
	}
	tn, _, err := st.CreateTenant(ctx, "acme")
	if err != nil || tn.Shard != "silent" {
		t.Fatalf("tenant on %q (%v), want the silent shard", tn.Shard, err)
	}
	cli := tc.ShardClient(t, "s1") // the same etcd, reached directly
	ref, err := watchcheck.StartReference(ctx, cli)
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Stop()
	n := startNode(t, tc, "node", Config{ProgressInterval: 100 * time.Millisecond, StallTimeout: 500 * time.Millisecond})
	sub := subscribeChecked(t, n, "acme", nil, false)
	sub.opts.Merged = true
	put(t, cli, "acme", "kv/before", "1")

	fz.freeze()
	var last int64
	for i := 0; i < 20; i++ {
		last = put(t, cli, "acme", fmt.Sprintf("kv/k%d", i%5), fmt.Sprint(i))
	}
	silent := n.c.shard("silent")
	testcluster.WaitFor(t, "the stalled watch to be restarted", func() bool {
		silent.mu.RLock()
		defer silent.mu.RUnlock()
		return silent.restarts > 0
	})
	fz.unfreeze()
	sub.waitRevision(t, ref, last)
}
