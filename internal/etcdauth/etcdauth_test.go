package etcdauth

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/confetti-io/confetti/internal/embedetcd"
)

var testAuth = embedetcd.Auth{RootPassword: "root-pw", User: "confetti", Password: "user-pw", Prefix: "/confetti/"}

// startAuthed starts a one-member etcd with auth on (simple tokens, etcd's
// default) in dir; a restart in the same dir keeps its ports.
func startAuthed(t *testing.T, ctx context.Context, dir string) *embedetcd.Cluster {
	t.Helper()
	c, err := embedetcd.Start(ctx, embedetcd.Config{Name: "auth", DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.EnableAuth(ctx, testAuth); err != nil {
		t.Fatal(err)
	}
	return c
}

// countAuthenticates counts the Authenticate calls a client sends.
func countAuthenticates(n *atomic.Int64) grpc.DialOption {
	return grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if method == authenticateMethod {
			n.Add(1)
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	})
}

// After an etcd restart invalidates every simple token, a burst of
// concurrent requests costs one Authenticate, and every request succeeds.
func TestRestartCostsOneAuthenticateForAllRequests(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	c := startAuthed(t, ctx, dir)
	var sent atomic.Int64
	cli, tok, err := newClient(clientv3.Config{
		Endpoints: c.Endpoints(), Username: testAuth.User, Password: testAuth.Password,
		DialTimeout: 5 * time.Second, Logger: zap.NewNop(), DialOptions: []grpc.DialOption{countAuthenticates(&sent)},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Put(ctx, "/confetti/k", "before"); err != nil {
		t.Fatal(err)
	}
	wch := cli.Watch(ctx, "/confetti/", clientv3.WithPrefix(), clientv3.WithRev(1))
	<-wch

	c.Close()
	c = startAuthed(t, ctx, dir)
	defer c.Close()
	before := sent.Load()

	const n = 50
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// The first requests may meet the restarting server; a
			// caller retries those as it would any unavailable etcd.
			var err error
			for attempt := 0; attempt < 50; attempt++ {
				rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				_, err = cli.Put(rctx, fmt.Sprintf("/confetti/k%d", i), "after")
				cancel()
				if err == nil || errors.Is(rpctypes.Error(err), rpctypes.ErrInvalidAuthToken) {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("a put after the restart failed: %v", err)
		}
	}
	if got := sent.Load() - before; got != 1 {
		t.Fatalf("%d concurrent requests after a restart sent %d Authenticate calls, want 1", n, got)
	}
	if got := tok.authenticates.Load(); got != 2 {
		t.Fatalf("the client fetched %d tokens, want 2 (at start and after the restart)", got)
	}
	// A watch opened after the restart carries the new token.
	w := cli.Watch(ctx, "/confetti/k", clientv3.WithRev(1))
	if wr := <-w; wr.Err() != nil || len(wr.Events) == 0 {
		t.Fatalf("watch after the restart: %v", wr.Err())
	}
}

// Wrong credentials fail when the client is made, with etcd's error.
func TestWrongPasswordFailsAtOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := startAuthed(t, ctx, t.TempDir())
	defer c.Close()
	_, err := New(clientv3.Config{Endpoints: c.Endpoints(), Username: testAuth.User, Password: "wrong", DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if !errors.Is(err, rpctypes.ErrAuthFailed) {
		t.Fatalf("err = %v, want %v", err, rpctypes.ErrAuthFailed)
	}
}

// Against an etcd without auth, a client with credentials sends no token.
func TestAuthOffSendsNoToken(t *testing.T) {
	c := embedetcd.NewForTest(t, 1)
	cli, tok, err := newClient(clientv3.Config{Endpoints: c.Endpoints(), Username: "u", Password: "p", DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Put(context.Background(), "k", "v"); err != nil {
		t.Fatal(err)
	}
	if got, _ := tok.current(); got != "" {
		t.Fatalf("token %q with auth off", got)
	}
}
