package bench

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// cpuTime is the user plus system CPU time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// maxRSS is the largest resident set this process has had, in bytes.
func maxRSS() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Maxrss * 1024
}

// memory is the process's resident set and the Go heap in use, measured
// after garbage collections that empty the sync.Pools (gRPC keeps its
// buffers in them; a pooled object survives one collection) and return
// freed memory to the system, so that two measurements differ by what is
// still held.
type memory struct {
	rss, heap int64
}

func measureMemory() memory {
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memory{rss: currentRSS(), heap: int64(ms.HeapInuse)}
}

// currentRSS is the process's resident set in bytes, from /proc; zero
// where /proc is not available.
func currentRSS() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize())
}

// raiseOpenFiles lifts this process's open-files limit to its hard limit
// and returns the limit now in force.
func raiseOpenFiles() uint64 {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0
	}
	if l.Cur < l.Max {
		l.Cur = l.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
		syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l)
	}
	return l.Cur
}

// etcdWatchers reads etcd's watcher gauge, which every etcd server
// embedded in this process shares through the default Prometheus
// registry: the sum of their watchers, or -1 when it is not registered.
func etcdWatchers() int { return int(etcdMetric("etcd_debugging_mvcc_watcher_total")) }

// etcdSentBytes reads the bytes of every gRPC response the embedded etcd
// servers encoded (watch responses included), or -1.
func etcdSentBytes() float64 { return etcdMetric("etcd_network_client_grpc_sent_bytes_total") }

// etcdMetric sums a gauge or counter of the default registry, or -1 when
// it is not registered.
func etcdMetric(name string) float64 {
	families, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		return -1
	}
	for _, f := range families {
		if f.GetName() == name {
			total := 0.0
			for _, m := range f.GetMetric() {
				total += m.GetGauge().GetValue() + m.GetCounter().GetValue()
			}
			return total
		}
	}
	return -1
}

// openFiles counts this process's open file descriptors, from /proc; -1
// where /proc is not available.
func openFiles() int {
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(fds)
}

// settle waits, up to ten seconds, until what a finished run held is
// released: etcd's watcher count back to watchers and this process's open
// files back to files plus a little (both are released asynchronously
// once the subscriber processes are gone), so that the next run's memory
// and watcher figures are its own.
func settle(ctx context.Context, watchers, files int) {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if etcdWatchers() <= watchers && openFiles() <= files+100 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Machine describes where a run ran.
type Machine struct {
	CPU       string `json:"cpu"`
	Cores     int    `json:"cores"`
	MemoryGiB int64  `json:"memory_gib"`
	GoVersion string `json:"go_version"`
	OS        string `json:"os"`
	Hostname  string `json:"hostname"`
}

func describeMachine() Machine {
	m := Machine{Cores: runtime.NumCPU(), GoVersion: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH}
	m.Hostname, _ = os.Hostname()
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				m.MemoryGiB = (kb + 512*1024) >> 20
			}
		}
	}
	return m
}

// isTerminal reports whether f is a character device (a terminal).
func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
