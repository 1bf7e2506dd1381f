//go:build !linux

package bench

import "syscall"

// bindLate leaves the socket as it is where IP_BIND_ADDRESS_NO_PORT does
// not exist.
func bindLate(_, _ string, _ syscall.RawConn) error { return nil }
