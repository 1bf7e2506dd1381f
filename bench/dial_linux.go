package bench

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// bindLate makes a connection bound to a source address take its port at
// connect time, so that ports are unique per destination rather than per
// source address, and connections of an earlier run still in TIME_WAIT
// do not exhaust them.
func bindLate(_, _ string, c syscall.RawConn) error {
	var err error
	if cerr := c.Control(func(fd uintptr) {
		err = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
	}); cerr != nil {
		return cerr
	}
	return err
}
