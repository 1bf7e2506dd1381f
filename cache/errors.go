package cache

import (
	"fmt"

	"google.golang.org/grpc/codes"

	"github.com/confetti-io/confetti/internal/rpcerr"
)

var (
	// ErrInvalidToken is returned for a token this cluster did not issue
	// or that was cut or altered.
	ErrInvalidToken = rpcerr.New(codes.InvalidArgument, "cache: invalid resume token")
	// ErrTokenTenant is returned for a token issued to another tenant.
	ErrTokenTenant = rpcerr.New(codes.InvalidArgument, "cache: token belongs to another tenant")
	// ErrBadRequest is returned for a malformed request.
	ErrBadRequest = rpcerr.New(codes.InvalidArgument, "cache: bad request")
	// ErrNotSynced is returned while a shard has not been loaded yet or
	// its watch is behind for longer than a request may wait.
	ErrNotSynced = rpcerr.New(codes.Unavailable, "cache: shard not synced")
	// ErrShardUnavailable is returned when a shard's etcd cannot answer.
	ErrShardUnavailable = rpcerr.New(codes.Unavailable, "cache: shard unavailable")
	// ErrOldRevision is returned for a read at an earlier revision, which
	// only the shard proxy serves.
	ErrOldRevision = rpcerr.New(codes.Unimplemented, "cache: reads at an earlier revision are served by the shard proxy (KV.Range with revision)")
	// ErrCompacted is returned for a start after_revision older than the
	// node's history (see CompactedError).
	ErrCompacted = rpcerr.New(codes.OutOfRange, "cache: revision compacted")
	// ErrTooManySubscriptions is returned over a subscription limit.
	ErrTooManySubscriptions = rpcerr.New(codes.ResourceExhausted, "cache: too many subscriptions")
	// ErrClosed is returned after Close.
	ErrClosed = rpcerr.New(codes.Unavailable, "cache: node shutting down")
)

// CompactedError says a subscription started with after_revision can no
// longer be served from history: Revision is the lowest etcd start
// revision (after_revision+1) the node still serves.
type CompactedError struct {
	Revision int64
}

func (e *CompactedError) Error() string {
	return fmt.Sprintf("%s: history starts at revision %d; start there or later, or start without after_revision for a Reset", ErrCompacted, e.Revision)
}

func (e *CompactedError) Unwrap() error { return ErrCompacted }
