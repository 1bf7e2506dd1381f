package gateway

import "errors"

var (
	// ErrBadConfig is returned by New for a configuration it cannot run.
	ErrBadConfig = errors.New("gateway: invalid config")
	// ErrStarted is returned by a second Start.
	ErrStarted = errors.New("gateway: client already started")
	// ErrClosed is returned by Start after Close.
	ErrClosed = errors.New("gateway: client closed")
	// ErrCorruptSnapshot reports a snapshot file that failed its checksum,
	// was truncated, or is not a snapshot; it is never served.
	ErrCorruptSnapshot = errors.New("gateway: corrupt snapshot")
	// ErrForeignSnapshot reports a snapshot file written for another
	// tenant or other prefixes; it is never served.
	ErrForeignSnapshot = errors.New("gateway: snapshot of another subscription")
)
