package auth

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/meta"
)

// echoCache is a Cache service that answers a subscription's start with a
// Progress naming the caller, then one Progress per ack, until the stream
// or its context ends, as the real cache does; Range echoes the caller's
// key id in its header.
type echoCache struct {
	pb.UnimplementedCacheServer
}

func (echoCache) Subscribe(stream pb.Cache_SubscribeServer) error {
	ctx := stream.Context()
	reqs := make(chan *pb.SubscribeRequest)
	errc := make(chan error, 1)
	go func() {
		for {
			req, err := stream.Recv()
			if err != nil {
				errc <- err
				return
			}
			select {
			case reqs <- req:
			case <-ctx.Done():
				return
			}
		}
	}()
	for {
		select {
		case req := <-reqs:
			p, _ := FromContext(ctx)
			if err := stream.Send(&pb.SubscribeResponse{Response: &pb.SubscribeResponse_Progress{Progress: &pb.Progress{Token: p.KeyID + "/" + req.GetAck().GetItem()}}}); err != nil {
				return err
			}
		case err := <-errc:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (echoCache) Range(ctx context.Context, req *pb.RangeRequest) (*pb.RangeResponse, error) {
	p, _ := FromContext(ctx)
	return &pb.RangeResponse{Header: &pb.ResponseHeader{Tenant: req.GetTenant(), Shard: p.KeyID}}, nil
}

// serveEcho serves echoCache and health behind a's interceptors and
// returns a connection to it.
func serveEcho(t *testing.T, a *Authenticator) *grpc.ClientConn {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(a.ServerOptions()...)
	pb.RegisterCacheServer(srv, echoCache{})
	healthpb.RegisterHealthServer(srv, health.NewServer())
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(lis)
	}()
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cc.Close()
		srv.Stop()
		<-done
	})
	return cc
}

func start(tenant string) *pb.SubscribeRequest {
	return &pb.SubscribeRequest{Request: &pb.SubscribeRequest_Start{Start: &pb.Start{Tenant: tenant}}}
}

func ack(item string) *pb.SubscribeRequest {
	return &pb.SubscribeRequest{Request: &pb.SubscribeRequest_Ack{Ack: &pb.Ack{Item: item}}}
}

func wantCode(t *testing.T, err error, code codes.Code) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("err = %v, want %v", err, code)
	}
}

func TestInterceptorsCheckUnaryCallsAndStreams(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
	keys := newFakeKeys()
	a, err := New(keys, Config{})
	if err != nil {
		t.Fatal(err)
	}
	cc := serveEcho(t, a)
	cache := pb.NewCacheClient(cc)
	reader := keys.add(t, "acme", meta.RoleReader)
	rk, _ := ParseKey(reader)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	with := func(key string) context.Context { return withOutgoingKey(ctx, key) }

	t.Run("health needs no key", func(t *testing.T) {
		if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("unary call without a key", func(t *testing.T) {
		_, err := cache.Range(ctx, &pb.RangeRequest{Tenant: "acme"})
		wantCode(t, err, codes.Unauthenticated)
	})
	t.Run("unary call passes the caller to the handler", func(t *testing.T) {
		resp, err := cache.Range(with(reader), &pb.RangeRequest{Tenant: "acme"})
		if err != nil || resp.GetHeader().GetShard() != rk.ID {
			t.Fatalf("Range = %v, %v; want the caller %s", resp, err, rk.ID)
		}
	})
	t.Run("unary call for another tenant", func(t *testing.T) {
		_, err := cache.Range(with(reader), &pb.RangeRequest{Tenant: "globex"})
		wantCode(t, err, codes.PermissionDenied)
	})
	t.Run("operator-only unary call", func(t *testing.T) {
		_, err := cache.Status(with(reader), &pb.CacheStatusRequest{})
		wantCode(t, err, codes.PermissionDenied)
	})
	t.Run("stream without a key", func(t *testing.T) {
		s, err := cache.Subscribe(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_, err = s.Recv()
		wantCode(t, err, codes.Unauthenticated)
	})
	t.Run("stream for another tenant", func(t *testing.T) {
		s, err := cache.Subscribe(with(reader))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Send(start("globex")); err != nil {
			t.Fatal(err)
		}
		_, err = s.Recv()
		wantCode(t, err, codes.PermissionDenied)
	})
	t.Run("stream whose key is revoked ends", func(t *testing.T) {
		s, err := cache.Subscribe(with(reader))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Send(start("acme")); err != nil {
			t.Fatal(err)
		}
		// Acks name no tenant and pass.
		if err := s.Send(ack("item-1")); err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{rk.ID + "/", rk.ID + "/item-1"} {
			m, err := s.Recv()
			if err != nil || m.GetProgress().GetToken() != want {
				t.Fatalf("Recv = %v, %v; want progress %q", m, err, want)
			}
		}
		keys.remove(rk.ID)
		_, err = s.Recv()
		wantCode(t, err, codes.Unauthenticated)
		if !containsAll(status.Convert(err).Message(), "revoked", rk.ID) {
			t.Fatalf("message %q does not say the key was revoked", status.Convert(err).Message())
		}
	})
	t.Run("revoked key opens no stream", func(t *testing.T) {
		s, err := cache.Subscribe(with(reader))
		if err != nil {
			t.Fatal(err)
		}
		_, err = s.Recv()
		wantCode(t, err, codes.Unauthenticated)
	})
	waitNoStreams(t, a)
}

func withOutgoingKey(ctx context.Context, key string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, MetadataKey, key)
}

func containsAll(s string, parts ...string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}

// waitNoStreams waits until every stream has been untracked.
func waitNoStreams(t *testing.T, a *Authenticator) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		a.mu.Lock()
		n := len(a.streams)
		a.mu.Unlock()
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d keys still have tracked streams", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestKeyTableNotLoadedIsUnavailable serves behind a meta store whose meta
// cluster does not answer: a request with a well-formed key is told that
// meta is not loaded yet, and from where, not that its key is invalid.
func TestKeyTableNotLoadedIsUnavailable(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ep := "http://" + lis.Addr().String()
	lis.Close()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	st, err := meta.New(cli, meta.Config{RequestTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	a, err := New(st, Config{})
	if err != nil {
		t.Fatal(err)
	}
	k, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, MetadataKey, k.String())
	_, err = pb.NewCacheClient(serveEcho(t, a)).Range(ctx, &pb.RangeRequest{Tenant: "acme"})
	if s := status.Convert(err); s.Code() != codes.Unavailable || !strings.Contains(s.Message(), "meta not loaded yet from "+ep) {
		t.Fatalf("request before meta is loaded: %v %q, want Unavailable saying meta is not loaded yet from %s", s.Code(), s.Message(), ep)
	}
}
