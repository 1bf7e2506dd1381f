package main

import (
	"errors"
	"fmt"
	"os"
	"runtime/pprof"
	"strings"

	"github.com/spf13/cobra"

	"github.com/confetti-io/confetti/bench"
)

func newBenchCommand(a *app) *cobra.Command {
	var (
		cfg        bench.Config
		cpuProfile string
	)
	cmd := &cobra.Command{
		Use:   "bench [scenario...]",
		Short: "Benchmark Confetti against etcd, etcd's grpc-proxy and the transport floor on this machine",
		Long: `Run the benchmark scenarios (all of them when none is named) on embedded
etcd in this process, with subscribers in child processes, and write
results.json, results.md and PNG plots to --out, or to a new temporary
directory whose path is printed at the end.

  fanout   one writer, N subscribers, through each target: floor (bare gRPC
           fan-out, no store), tcpfloor (bare TCP writes of the SSE bytes,
           a connection each), confetti (cache nodes), sse (the cache
           nodes' Server-Sent Events door, a connection each), etcd
           (watchers on etcd), etcdapi (the same clientv3 watchers on the
           cache nodes' etcd front door), grpcproxy (watchers through
           etcd's grpc-proxy)
  scale    the fan-out at N up to 50,000 (confetti by default), subscribers
           over several processes and 127.0.0.x source addresses
  resume   N subscribers on cache node 1, node 1 stopped: time until all
           resumed on node 2, and how many needed a Reset
  release  N gateways of one item: a plain key update of the item's size
           to all of them, then a gray of the next version to half of them,
           which only the gateways it selects receive
  writes   put and transaction latency and throughput through the shard
           proxy (gRPC and HTTP API) against etcd itself, on 1 and 3
           shards; and a registration storm of --registrations instances
           at once through 2 proxies against etcd itself

A run where a subscriber misses an update fails, and the command exits
non-zero after writing what it measured. --quick runs everything small
and short (under a minute) to check the harness end to end.`,
		Example: `  confetti bench --quick --out /tmp/bench
  confetti bench fanout --n 1000,10000 --streams-per-conn 100,1
  confetti bench scale --n 50000 --targets confetti
  confetti bench resume --n 10000
  confetti bench release --n 10000 --content-bytes 4096
  confetti bench writes --write-ops 5000`,
		ValidArgs: bench.Scenarios,
		Args:      cobra.OnlyValidArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg.Scenarios = args
			if cfg.Out == "" {
				// Never into the work tree unless asked: a run's files
				// are not source.
				dir, err := os.MkdirTemp("", "confetti-bench-")
				if err != nil {
					return err
				}
				cfg.Out = dir
			}
			cfg.ChildArgs = []string{"bench", "child"}
			cfg.Log, cfg.Progress = a.out, a.errOut
			cfg.CommandLine = strings.Join(append([]string{"confetti"}, os.Args[1:]...), " ")
			if cpuProfile != "" {
				f, err := os.Create(cpuProfile)
				if err != nil {
					return err
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					return err
				}
				defer pprof.StopCPUProfile()
			}
			_, err := a.runBench(cmd.Context(), cfg)
			return err
		},
	}
	fs := cmd.Flags()
	fs.BoolVar(&cfg.Quick, "quick", false, "run every scenario small and short, to check the harness works (CI)")
	fs.IntSliceVar(&cfg.N, "n", nil, "subscriber counts, comma separated (default: fanout 1000,10000; scale 50000; resume 10000)")
	fs.StringSliceVar(&cfg.Targets, "targets", nil, "fan-out targets: floor, tcpfloor, confetti, sse, etcd, etcdapi, grpcproxy (default: all for fanout, confetti for scale)")
	fs.IntSliceVar(&cfg.StreamsPerConn, "streams-per-conn", nil, "subscriptions per client connection, one run per value; 1 is a connection per subscriber (default: fanout 100,1; scale and resume 100)")
	fs.Var(newViewsFlag(&cfg.DistinctViews), "views", "same: every subscriber of a tenant watches the same key, so a connection's subscriptions of one tenant can share a message; distinct: each subscription has a view of its own and nothing is shared")
	fs.DurationVar(&cfg.Interval, "interval", 0, "time between updates (default 1s; quick 100ms)")
	fs.IntVar(&cfg.Updates, "updates", 0, "measured updates per run (default 20; quick 5)")
	fs.IntVar(&cfg.Warmup, "warmup", 0, "updates sent first and not measured (default 3; quick 2)")
	fs.IntVar(&cfg.Tenants, "tenants", 0, "tenants the writer spreads updates over; subscriber i follows tenant i mod K (default 1)")
	fs.Uint64Var(&cfg.Seed, "seed", 0, "seed of the tenant each update goes to; every target gets the same sequence (default 1)")
	fs.IntVar(&cfg.Procs, "procs", 0, "subscriber processes per run (default: one per 10,000 subscribers)")
	fs.IntVar(&cfg.CacheNodes, "cache-nodes", 0, "cache nodes the confetti subscribers are spread over (default 1; resume uses 2)")
	fs.IntVar(&cfg.Shards, "shards", 0, "etcd shard clusters of fanout, scale and resume (default 1; writes measures 1 and 3)")
	fs.IntVar(&cfg.ContentBytes, "content-bytes", 0, "size of the release scenario's item versions and plain update (default 1024)")
	fs.IntVar(&cfg.WriteOps, "write-ops", 0, "operations of each kind the writes scenario times (default 2000; quick 200)")
	fs.IntVar(&cfg.WriteClients, "write-clients", 0, "concurrent writers of the writes throughput runs (default 16)")
	fs.IntVar(&cfg.Registrations, "registrations", 0, "instances of the writes scenario's registration storm, registering at once (default 5000; quick 200)")
	fs.DurationVar(&cfg.DrainTimeout, "drain-timeout", 0, "how long subscribers may take to get every update after the last one is sent (default 1m; quick 20s)")
	fs.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the servers' process (etcd, cache nodes, proxies, writer) to this file")
	fs.StringVar(&cfg.Out, "out", "", "directory for results.json, results.md and the plots (default: a new temporary directory)")
	cmd.AddCommand(&cobra.Command{
		Use:    "child",
		Short:  "A subscriber process of a benchmark run (started by confetti bench)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if bench.RunChild(os.Stdin, a.out) != 0 {
				return errors.New("subscriber process failed")
			}
			return nil
		},
	})
	return cmd
}

// viewsFlag is --views: same or distinct.
type viewsFlag struct{ distinct *bool }

func newViewsFlag(p *bool) *viewsFlag { return &viewsFlag{distinct: p} }

func (f *viewsFlag) String() string {
	if f.distinct != nil && *f.distinct {
		return "distinct"
	}
	return "same"
}

func (f *viewsFlag) Set(v string) error {
	switch v {
	case "same", "distinct":
		*f.distinct = v == "distinct"
		return nil
	}
	return fmt.Errorf("--views is same or distinct, not %q", v)
}

func (f *viewsFlag) Type() string { return "same|distinct" }
