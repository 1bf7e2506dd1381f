package shardproxy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/confetti-io/confetti/internal/meta"
	"github.com/confetti-io/confetti/internal/rpcerr"
)

func TestShardErrorCodes(t *testing.T) {
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		name     string
		ctx      context.Context
		err      error
		wantCode codes.Code
		wantIs   error
	}{
		{name: "no leader", err: rpctypes.ErrNoLeader, wantCode: codes.Unavailable, wantIs: ErrShardUnavailable},
		{name: "server timeout", err: rpctypes.ErrTimeout, wantCode: codes.Unavailable, wantIs: ErrShardUnavailable},
		{name: "connection refused", err: status.Error(codes.Unavailable, "connection refused"), wantCode: codes.Unavailable, wantIs: ErrShardUnavailable},
		{name: "proxy request timeout", err: context.DeadlineExceeded, wantCode: codes.Unavailable, wantIs: ErrShardUnavailable},
		{name: "grpc deadline status", err: status.Error(codes.DeadlineExceeded, "deadline"), wantCode: codes.Unavailable, wantIs: ErrShardUnavailable},
		{name: "shard not in registry", err: fmt.Errorf("%w: %q", meta.ErrShardNotFound, "s2"), wantCode: codes.Unavailable, wantIs: ErrShardUnavailable},
		{name: "caller canceled", ctx: canceled, err: status.Error(codes.Canceled, "canceled"), wantCode: codes.Canceled, wantIs: context.Canceled},
		{name: "compacted", err: rpctypes.ErrCompacted, wantCode: codes.OutOfRange, wantIs: ErrCompacted},
		{name: "future revision", err: rpctypes.ErrFutureRev, wantCode: codes.OutOfRange, wantIs: ErrFutureRevision},
		{name: "lease not found", err: rpctypes.ErrLeaseNotFound, wantCode: codes.NotFound, wantIs: ErrLeaseNotFound},
		{name: "quota", err: rpctypes.ErrNoSpace, wantCode: codes.ResourceExhausted, wantIs: ErrShardFull},
		{name: "too many requests", err: rpctypes.ErrTooManyRequests, wantCode: codes.ResourceExhausted, wantIs: ErrShardBusy},
		{name: "request too large", err: rpctypes.ErrRequestTooLarge, wantCode: codes.InvalidArgument, wantIs: ErrRequestTooLarge},
		{name: "permission denied to the proxy", err: rpctypes.ErrPermissionDenied, wantCode: codes.Internal, wantIs: ErrShardFailed},
		{name: "unknown", err: errors.New("boom"), wantCode: codes.Internal, wantIs: ErrShardFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := tc.ctx
			if ctx == nil {
				ctx = context.Background()
			}
			err := shardError(ctx, "s2", tc.err)
			if !errors.Is(err, tc.wantIs) {
				t.Fatalf("%v is not %v", err, tc.wantIs)
			}
			st := status.Convert(rpcerr.Status(err))
			if st.Code() != tc.wantCode {
				t.Fatalf("code = %v (%q), want %v", st.Code(), st.Message(), tc.wantCode)
			}
			if !strings.Contains(st.Message(), "shard s2") {
				t.Fatalf("message %q does not name the shard", st.Message())
			}
		})
	}
}

func TestMethodName(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{name: "kv", in: "/confetti.v1.KV/Put", want: "KV.Put"},
		{name: "tenants", in: "/confetti.v1.Tenants/CreateAPIKey", want: "Tenants.CreateAPIKey"},
		{name: "no package", in: "/Svc/M", want: "Svc.M"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := methodName(tc.in); got != tc.want {
				t.Fatalf("methodName(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestConfigDefaultsAndValidation(t *testing.T) {
	got, err := Config{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	d := DefaultConfig()
	if got.Logger == nil || got.MaxKeyBytes != 4096 || got.MaxValueBytes != 1<<20 || got.MaxTTL != 86400 ||
		got.MaxRangeKeys != d.MaxRangeKeys || got.RequestTimeout != d.RequestTimeout {
		t.Fatalf("defaults: %+v", got)
	}
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{name: "negative key limit", cfg: Config{MaxKeyBytes: -1}},
		{name: "negative value limit", cfg: Config{MaxValueBytes: -1}},
		{name: "negative ttl", cfg: Config{MaxTTL: -1}},
		{name: "negative range keys", cfg: Config{MaxRangeKeys: -1}},
		{name: "negative timeout", cfg: Config{RequestTimeout: -1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := tc.cfg.withDefaults(); err == nil {
				t.Fatal("want an error")
			}
		})
	}
	if _, err := New(nil, nil, Config{}); err == nil {
		t.Fatal("New without a store: want an error")
	}
}
