package main

import (
	"encoding/json"

	"github.com/spf13/cobra"

	"github.com/confetti-io/confetti/internal/buildinfo"
)

func newVersionCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version, VCS revision, Go version and API version of this binary",
		Long: `Print what this binary is: the module version and VCS revision the Go
toolchain stamped into it, the Go version that built it, and the API
version it serves and speaks. 'confetti --version' prints the same on one
line; server roles log it when they start and export it as the
confetti_build_info metric.`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			info := buildinfo.Get()
			p := a.printer()
			if p.json {
				enc := json.NewEncoder(p.w)
				enc.SetEscapeHTML(false)
				return enc.Encode(info)
			}
			revision := info.Revision
			if info.Modified {
				revision += " (modified)"
			}
			if info.Time != "" {
				revision += " of " + info.Time
			}
			for _, l := range [][2]string{
				{"version", info.Version},
				{"revision", revision},
				{"go", info.GoVersion},
				{"api", info.API},
			} {
				if err := p.line("%-9s %s", l[0]+":", l[1]); err != nil {
					return err
				}
			}
			return nil
		},
	}
}
