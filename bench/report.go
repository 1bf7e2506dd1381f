package bench

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// write writes results.json, results.md and the plots to the output
// directory.
func (h *harness) write() error {
	plots, err := writePlots(h.cfg.Out, h.res)
	h.res.Plots = plots
	if err != nil {
		h.failed("plots", err)
	}
	b, err := json.MarshalIndent(h.res, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(h.cfg.Out, "results.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	md := Markdown(h.res)
	if err := os.WriteFile(filepath.Join(h.cfg.Out, "results.md"), []byte(md), 0o644); err != nil {
		return err
	}
	h.logf("\n%s\nwritten to %s", md, h.cfg.Out)
	return nil
}

// Markdown renders the results as the tables of results.md.
func Markdown(r *Results) string {
	var b strings.Builder
	m := r.Machine
	fmt.Fprintf(&b, "# Confetti benchmark, %s\n\n", r.Date)
	fmt.Fprintf(&b, "Machine: %s, %d cores, %d GiB, %s, %s. Servers (etcd, cache nodes, proxies, floor) and the writer run in the harness process; subscribers in child processes on the same cores.\n\n",
		orUnknown(m.CPU), m.Cores, m.MemoryGiB, m.OS, m.GoVersion)
	if r.CommandLine != "" {
		fmt.Fprintf(&b, "Command: `%s`\n\n", r.CommandLine)
	}
	s := r.Settings
	fmt.Fprintf(&b, "Workload: %d measured updates (after %d warm-up) %d ms apart, over %d tenant(s) on %d shard(s), seed %d; confetti on %d cache node(s).\n\n",
		s.Updates, s.Warmup, s.IntervalMs, s.Tenants, s.Shards, s.Seed, s.CacheNodes)
	var rows [][]string
	for _, f := range r.Fanout {
		rows = append(rows, []string{
			f.Scenario, count(int64(f.N)), strconv.Itoa(f.StreamsPerConn), f.Views, count(int64(f.Conns)), strconv.Itoa(f.Procs), f.Target,
			ms(f.Latency.P50), ms(f.Latency.P99), ms(f.Latency.P999), ms(f.Latency.Max),
			ratio(f.P99VsFloor), ratio(f.P99VsTCPFloor), ratio(f.P99VsEtcd), count(int64(f.EventsPerSec)),
			us(f.ServerCPUPerEvent), ratio(f.CPUVsTCPFloor), us(f.ClientCPUPerEvent), byteSize(f.ServerRSSPerSub), byteSize(f.ServerHeapPerSub),
			count(int64(f.EtcdWatchers)), byteSize(f.EtcdSentPerUpdate), strconv.Itoa(f.Restarts), delivered(f),
		})
	}
	table(&b, "Fan-out", "lrrlrrlrrrrrrrrrrrrrrrrl", []string{"scenario", "N", "streams/conn", "views", "conns", "procs", "target", "p50", "p99", "p99.9", "max",
		"p99/floor", "p99/tcpfloor", "p99/etcd", "events/s", "server CPU/event", "CPU/tcpfloor", "client CPU/event", "server RSS/sub", "server heap/sub", "etcd watchers", "etcd sent/update", "watch restarts", "delivered"}, rows)
	rows = nil
	for _, x := range r.Resume {
		rows = append(rows, []string{
			count(int64(x.N)), strconv.Itoa(x.StreamsPerConn), strconv.Itoa(x.Procs), ms(x.StopMs), ms(x.AllResumedMs), ms(x.Resume.P50), ms(x.Resume.P99),
			count(int64(x.Replays)), count(int64(x.Resets)), count(int64(x.Incomplete)),
		})
	}
	table(&b, "Resume storm", "rrrrrrrrrr", []string{"N", "streams/conn", "procs", "node 1 stop", "all resumed", "resume p50", "resume p99", "replayed", "reset", "incomplete"}, rows)
	rows = nil
	for _, x := range r.Release {
		rows = append(rows, []string{
			count(int64(x.N)), strconv.Itoa(x.StreamsPerConn), byteSize(float64(x.ContentBytes)),
			ms(x.Plain.P50), ms(x.Plain.P99), ms(x.Plain.Max), byteSize(x.PlainBytesPerSub),
			count(int64(x.Affected)), ms(x.Gray.P50), ms(x.Gray.P99), ms(x.Gray.Max), byteSize(x.GrayBytesPerAffected),
			count(x.Missing + int64(x.Incomplete)),
		})
	}
	table(&b, "Release: gray to 50% against a plain update of the same size", "rrrrrrrrrrrrr", []string{"N", "streams/conn", "size",
		"plain p50", "plain p99", "plain last", "plain bytes/sub", "affected", "gray p50", "gray p99", "gray last", "gray bytes/affected", "missing"}, rows)
	rows = nil
	for _, w := range r.Writes {
		rows = append(rows, []string{
			shardsOf(w), w.Op, w.Path, ms(w.Latency.P50), ms(w.Latency.P99), ms(w.Latency.P999), ms(w.Latency.Max),
			count(int64(w.OpsPerSec)), ratio(w.P50VsDirect), ratio(w.P99VsDirect), ratio(w.RateVsDirect),
		})
	}
	table(&b, "Writes", "rllrrrrrrrr", []string{"shards", "op", "path", "p50", "p99", "p99.9", "max", "ops/s", "p50/direct", "p99/direct", "ops/s vs direct"}, rows)
	rows = nil
	for _, x := range r.Register {
		rows = append(rows, []string{
			x.Path, count(int64(x.N)), orDash(x.Proxies), ms(x.AllMs), ms(x.Latency.P50), ms(x.Latency.P99), ms(x.Latency.Max),
			strconv.Itoa(x.Leases), ratio(x.AllVsDirect), ratio(x.P99VsDirect),
		})
	}
	table(&b, "Registration storm", "lrrrrrrrrr", []string{"path", "instances", "proxies", "all registered", "p50", "p99", "max", "leases", "all/direct", "p99/direct"}, rows)
	if len(r.Failures) > 0 {
		b.WriteString("## Failures\n\n")
		for _, f := range r.Failures {
			fmt.Fprintf(&b, "- %s\n", f)
		}
		b.WriteString("\n")
	}
	if len(r.Plots) > 0 {
		b.WriteString("## Plots\n\n")
		for _, p := range r.Plots {
			fmt.Fprintf(&b, "![%s](%s)\n", p, p)
		}
	}
	return b.String()
}

// table writes a Markdown section titled title holding a table, unless
// there are no rows; align has an l (left) or r (right) per column.
func table(b *strings.Builder, title, align string, header []string, rows [][]string) {
	if len(rows) == 0 {
		return
	}
	fmt.Fprintf(b, "## %s\n\n| %s |\n|", title, strings.Join(header, " | "))
	for _, a := range align {
		if a == 'r' {
			b.WriteString(" ---: |")
		} else {
			b.WriteString(" --- |")
		}
	}
	b.WriteString("\n")
	for _, r := range rows {
		fmt.Fprintf(b, "| %s |\n", strings.Join(r, " | "))
	}
	b.WriteString("\n")
}

func fanoutLine(f FanoutResult) string {
	return fmt.Sprintf("%s %-9s N=%d streams/conn=%d conns=%d procs=%d  p50=%s p99=%s p99.9=%s max=%s  events/s=%s  server cpu/event=%s client cpu/event=%s  server rss/sub=%s heap/sub=%s  etcd watchers=%d sent/update=%s restarts=%d  delivered=%s",
		f.Scenario, f.Target, f.N, f.StreamsPerConn, f.Conns, f.Procs, ms(f.Latency.P50), ms(f.Latency.P99), ms(f.Latency.P999), ms(f.Latency.Max),
		count(int64(f.EventsPerSec)), us(f.ServerCPUPerEvent), us(f.ClientCPUPerEvent), byteSize(f.ServerRSSPerSub), byteSize(f.ServerHeapPerSub), f.EtcdWatchers, byteSize(f.EtcdSentPerUpdate), f.Restarts, delivered(f))
}

func resumeLine(x ResumeResult) string {
	return fmt.Sprintf("resume N=%d streams/conn=%d  stop=%s all resumed=%s p50=%s p99=%s  replayed=%d reset=%d incomplete=%d",
		x.N, x.StreamsPerConn, ms(x.StopMs), ms(x.AllResumedMs), ms(x.Resume.P50), ms(x.Resume.P99), x.Replays, x.Resets, x.Incomplete)
}

func releaseLine(x ReleaseResult) string {
	return fmt.Sprintf("release N=%d streams/conn=%d size=%d  plain p99=%s last=%s bytes/sub=%s  gray affected=%d p99=%s last=%s bytes/affected=%s  missing=%d incomplete=%d",
		x.N, x.StreamsPerConn, x.ContentBytes, ms(x.Plain.P99), ms(x.Plain.Max), byteSize(x.PlainBytesPerSub),
		x.Affected, ms(x.Gray.P99), ms(x.Gray.Max), byteSize(x.GrayBytesPerAffected), x.Missing, x.Incomplete)
}

func writesLine(w WritesResult) string {
	return fmt.Sprintf("writes shards=%s %-5s %-10s p50=%s p99=%s max=%s  %s ops/s with %d clients  p50/direct=%s",
		shardsOf(w), w.Op, w.Path, ms(w.Latency.P50), ms(w.Latency.P99), ms(w.Latency.Max), count(int64(w.OpsPerSec)), w.Clients, ratio(w.P50VsDirect))
}

// shardsOf is a writes result's shard count, "-" for the unary floor.
func shardsOf(w WritesResult) string {
	if w.Shards == 0 {
		return "-"
	}
	return strconv.Itoa(w.Shards)
}

func delivered(f FanoutResult) string {
	switch {
	case f.Expected == 0:
		return "-"
	case f.Missing == 0 && f.Error == "":
		return "all"
	case f.Missing == 0:
		return "failed"
	}
	return fmt.Sprintf("%s missing", count(f.Missing))
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown CPU"
	}
	return s
}

// ms formats milliseconds with three significant digits.
func ms(v float64) string {
	switch {
	case v == 0:
		return "-"
	case v < 1:
		return fmt.Sprintf("%.0f µs", v*1000)
	case v < 10:
		return fmt.Sprintf("%.2f ms", v)
	case v < 100:
		return fmt.Sprintf("%.1f ms", v)
	case v < 10000:
		return fmt.Sprintf("%.0f ms", v)
	}
	return fmt.Sprintf("%.1f s", v/1000)
}

func us(v float64) string {
	if v == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f µs", v)
}

func ratio(v float64) string {
	if v == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", v)
}

// byteSize formats a byte count in KiB or MiB with one decimal.
func byteSize(v float64) string {
	switch {
	case v < 0:
		return "-" + byteSize(-v)
	case v < 1024:
		return fmt.Sprintf("%.0f B", v)
	case v < 1<<20:
		return fmt.Sprintf("%.1f KiB", v/1024)
	}
	return fmt.Sprintf("%.1f MiB", v/(1<<20))
}

// count formats an integer with thousands separators.
func count(v int64) string {
	s := strconv.FormatInt(v, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	if neg {
		return "-" + s
	}
	return s
}

// orDash is n, or "-" when zero.
func orDash(n int) string {
	if n == 0 {
		return "-"
	}
	return strconv.Itoa(n)
}
