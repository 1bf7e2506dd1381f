package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/confetti-io/confetti/chaos"
)

func newChaosCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "chaos",
		Short: "Break a Confetti deployment of processes on purpose and check that nothing is lost",
		Long: `Run fault scenarios against a whole deployment started as processes on
this machine: meta and 3 shards of 3 members of the real etcd binary (auth
on), 2 shard proxies and 2 cache nodes of this binary, subscribers on the
SDK, and a TCP proxy on every network path. Traffic runs through both
proxies while faults are injected and healed; then porcupine checks the
history for linearizability, every subscriber's stream is checked against
a reference watch of etcd, and every acknowledged write is looked for in
etcd's history. Each run writes a report directory (see the README,
"Chaos").`,
	}
	cmd.AddCommand(newChaosRunCommand(a), newChaosListCommand(a))
	return cmd
}

func newChaosListCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the chaos scenarios",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			p := a.printer()
			for _, sc := range chaos.Scenarios(1) {
				if err := p.line("%-14s %s", sc.Name, sc.About); err != nil {
					return err
				}
			}
			return nil
		},
	}
}

func newChaosRunCommand(a *app) *cobra.Command {
	var (
		seed    uint64
		out     string
		etcdBin string
		scale   float64
	)
	cmd := &cobra.Command{
		Use:   "run SCENARIO",
		Short: "Run one chaos scenario and write its report",
		Long: `Run one scenario ('confetti chaos list' names them) and write its report
to --out/SCENARIO-seedN: summary.md (the figures, the faults, availability
by window, violations), operations.jsonl, timeline.jsonl, streams.jsonl,
linearizability.html and the processes' logs. It exits 1 when the run
found a violation.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			sc, err := chaos.Find(args[0], scale)
			if err != nil {
				return err
			}
			self, err := os.Executable()
			if err != nil {
				return err
			}
			if etcdBin == "" {
				etcdBin = filepath.Join(filepath.Dir(self), "etcd")
				if _, err := os.Stat(etcdBin); err != nil {
					if etcdBin, err = exec.LookPath("etcd"); err != nil {
						return errors.New("no etcd binary beside confetti or on PATH: run make etcd, or give --etcd-bin")
					}
				}
			}
			lg, err := newLogger(a.errOut, "info", false)
			if err != nil {
				return err
			}
			r, err := chaos.Run(cmd.Context(), sc, chaos.Options{Seed: seed, Out: out, Bins: chaos.Binaries{Etcd: etcdBin, Confetti: self}, Logger: lg.Named("chaos").WithOptions(zap.IncreaseLevel(zap.InfoLevel))})
			if err != nil {
				return err
			}
			if err := a.printer().line("%s\nreport: %s", r.Markdown(), r.Dir); err != nil {
				return err
			}
			if !r.Pass() {
				return fmt.Errorf("%d violations (report: %s)", len(r.Violations), r.Dir)
			}
			return nil
		},
	}
	fs := cmd.Flags()
	fs.Uint64Var(&seed, "seed", 1, "seed of the traffic and the faults' random choices")
	fs.StringVar(&out, "out", "build/chaos", "directory the report directory is made in")
	fs.StringVar(&etcdBin, "etcd-bin", "", "etcd server binary (default: etcd beside this binary, else on PATH)")
	fs.Float64Var(&scale, "scale", 1, "stretch the fault schedule in time by this factor")
	return cmd
}
