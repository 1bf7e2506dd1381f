package release

import (
	"google.golang.org/grpc/codes"

	"github.com/confetti-io/confetti/internal/rpcerr"
)

var (
	// ErrInvalidItem is returned for an item name outside
	// [a-zA-Z0-9._-]{1,128}.
	ErrInvalidItem = rpcerr.New(codes.InvalidArgument, "release: invalid item name")
	// ErrInvalidSelector is returned for a label selector that does not
	// parse; the message names the position and what was expected.
	ErrInvalidSelector = rpcerr.New(codes.InvalidArgument, "release: invalid selector")
)

var (
	// ErrInvalidGray is returned for a gray with a bad id or rule.
	ErrInvalidGray = rpcerr.New(codes.InvalidArgument, "release: invalid gray")
	// ErrInvalidPlan is returned for a staged plan with bad steps, bake
	// time or NACK limit.
	ErrInvalidPlan = rpcerr.New(codes.InvalidArgument, "release: invalid plan")
)
