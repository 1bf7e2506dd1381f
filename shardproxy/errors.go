package shardproxy

import (
	"context"
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"

	"github.com/confetti-io/confetti/internal/meta"
	"github.com/confetti-io/confetti/internal/rpcerr"
)

var (
	// ErrInvalidRequest is returned for a malformed request: a negative
	// limit, revision or lease, options that exclude each other.
	ErrInvalidRequest = rpcerr.New(codes.InvalidArgument, "shardproxy: invalid request")
	// ErrKeyTooLarge is returned for a key longer than Config.MaxKeyBytes.
	ErrKeyTooLarge = rpcerr.New(codes.InvalidArgument, "shardproxy: key too large")
	// ErrValueTooLarge is returned for a value longer than
	// Config.MaxValueBytes.
	ErrValueTooLarge = rpcerr.New(codes.InvalidArgument, "shardproxy: value too large")
	// ErrInvalidTTL is returned for a TTL outside [0, Config.MaxTTL].
	ErrInvalidTTL = rpcerr.New(codes.InvalidArgument, "shardproxy: invalid ttl")
	// ErrConflict is returned when a write's expected mod revision is not
	// the key's current one; the message carries the current revision.
	ErrConflict = rpcerr.New(codes.FailedPrecondition, "shardproxy: mod revision mismatch")
	// ErrTenantMoving is returned for a write refused by the tenant's fence:
	// the tenant is being moved to another shard and writes resume on the
	// new shard once the move completes.
	ErrTenantMoving = rpcerr.New(codes.Unavailable, "shardproxy: tenant is moving between shards")
	// ErrShardUnavailable is returned when the tenant's shard cannot serve a
	// request: no leader, unreachable members, a request timeout, or a
	// shard missing from the registry.
	ErrShardUnavailable = rpcerr.New(codes.Unavailable, "shardproxy: shard unavailable")
	// ErrShardFull is returned when the shard's etcd quota is exhausted.
	ErrShardFull = rpcerr.New(codes.ResourceExhausted, "shardproxy: shard out of space")
	// ErrShardBusy is returned when the shard rate-limits the proxy.
	ErrShardBusy = rpcerr.New(codes.ResourceExhausted, "shardproxy: shard busy")
	// ErrCompacted is returned for a read at a revision the shard has
	// compacted away.
	ErrCompacted = rpcerr.New(codes.OutOfRange, "shardproxy: revision compacted")
	// ErrFutureRevision is returned for a read at a revision the shard has
	// not reached.
	ErrFutureRevision = rpcerr.New(codes.OutOfRange, "shardproxy: future revision")
	// ErrLeaseNotFound is returned for a lease that does not exist (or has
	// expired) on the tenant's shard.
	ErrLeaseNotFound = rpcerr.New(codes.NotFound, "shardproxy: lease not found")
	// ErrLeaseNotOwned is returned for a lease that lives on the tenant's
	// shard but is not bound to the tenant: another tenant's lease, or one
	// granted around the proxy.
	ErrLeaseNotOwned = rpcerr.New(codes.PermissionDenied, "shardproxy: lease not owned by the tenant")
	// ErrInstanceNotFound is returned for a service instance that is not
	// registered (never was, was deregistered, or its lease expired).
	ErrInstanceNotFound = rpcerr.New(codes.NotFound, "shardproxy: instance not registered")
	// ErrClosing is returned to the streams a closing proxy ends; callers
	// reconnect, to another proxy if this one is going away.
	ErrClosing = rpcerr.New(codes.Unavailable, "shardproxy: proxy shutting down")
	// ErrRequestTooLarge is returned when the shard refuses a request for
	// its size or number of operations.
	ErrRequestTooLarge = rpcerr.New(codes.InvalidArgument, "shardproxy: request too large")
	// ErrShardFailed is returned for any other failure of a shard request;
	// it is not the caller's fault.
	ErrShardFailed = rpcerr.New(codes.Internal, "shardproxy: shard request failed")
	// ErrRateLimited is returned when a tenant exceeds its request rate
	// on this proxy (Config.TenantRPS); the message says when to retry.
	ErrRateLimited = rpcerr.New(codes.ResourceExhausted, "shardproxy: rate limited")
	// ErrNotAvailableYet is returned by the RPCs of the API that this
	// version of the proxy does not serve yet; the message says what the
	// RPC will do.
	ErrNotAvailableYet = rpcerr.New(codes.Unimplemented, "shardproxy: not available yet")
)

// shardError turns an error of an etcd request against shard into one of
// the sentinels above. ctx is the caller's context: when the caller gave up,
// the caller's own context error is returned; when only the proxy's
// per-request timeout fired, the shard is reported unavailable. The etcd
// error is kept as text only (%v), so that a gRPC status inside it can
// never override the sentinel's code.
func shardError(ctx context.Context, shard string, err error) error {
	if err == nil {
		return nil
	}
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("shardproxy: request to shard %s: %w", shard, cerr)
	}
	switch {
	case errors.Is(err, rpctypes.ErrCompacted):
		return fmt.Errorf("%w: shard %s has compacted that revision; read at a later revision, or 0 for the latest", ErrCompacted, shard)
	case errors.Is(err, rpctypes.ErrFutureRev):
		return fmt.Errorf("%w: shard %s has not reached that revision; read at a revision from a response header, or 0 for the latest", ErrFutureRevision, shard)
	case errors.Is(err, rpctypes.ErrLeaseNotFound):
		return fmt.Errorf("%w: on shard %s; grant a new lease or put with a ttl", ErrLeaseNotFound, shard)
	case errors.Is(err, rpctypes.ErrLeaseTTLTooLarge):
		return fmt.Errorf("%w: shard %s refuses the ttl as too large; use a smaller ttl", ErrInvalidTTL, shard)
	case errors.Is(err, rpctypes.ErrNoSpace):
		return fmt.Errorf("%w: shard %s exceeded its etcd storage quota; an operator must compact and defragment it or move tenants away", ErrShardFull, shard)
	case errors.Is(err, rpctypes.ErrTooManyRequests):
		return fmt.Errorf("%w: shard %s: %v; retry with backoff", ErrShardBusy, shard, err)
	case errors.Is(err, rpctypes.ErrRequestTooLarge), errors.Is(err, rpctypes.ErrTooManyOps):
		return fmt.Errorf("%w: shard %s: %v; send smaller values or fewer operations", ErrRequestTooLarge, shard, err)
	case errors.Is(err, meta.ErrShardNotFound):
		return fmt.Errorf("%w: shard %s is not in the shard registry: %v", ErrShardUnavailable, shard, err)
	case errors.Is(err, meta.ErrUnavailable), errors.Is(err, meta.ErrShardUnreachable):
		return fmt.Errorf("%w: shard %s: %v", ErrShardUnavailable, shard, err)
	}
	switch etcdCode(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
		return fmt.Errorf("%w: shard %s: %v; retry with backoff (tenants on other shards are unaffected)", ErrShardUnavailable, shard, err)
	}
	return fmt.Errorf("%w: shard %s: %v", ErrShardFailed, shard, err)
}

// etcdCode is the gRPC code of an error returned by the etcd client: an
// etcd error's own code, else what rpcerr.Code makes of it (the proxy's
// per-request timeout counts as DeadlineExceeded).
func etcdCode(err error) codes.Code {
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		return ee.Code()
	}
	return rpcerr.Code(err)
}
