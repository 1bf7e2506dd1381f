package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// newHealthCommand is a probe for containers whose images hold nothing
// but this binary: compose health checks and Kubernetes exec probes.
func newHealthCommand(a *app) *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "health ADDR|URL",
		Short: "Exit 0 when a role is ready: its gRPC health (host:port) or an HTTP URL (/readyz) answers so",
		Long: `Probe a role, for health checks of containers that hold nothing but this
binary. With host:port it asks the gRPC health service (grpc.health.v1) for
the server's overall status and succeeds on SERVING; with an http:// URL
(a role's /readyz) it succeeds on 200. Otherwise it prints why and exits 1.`,
		Example: `  confetti health 127.0.0.1:7700
  confetti health http://127.0.0.1:9081/readyz`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			if strings.HasPrefix(args[0], "http://") || strings.HasPrefix(args[0], "https://") {
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, args[0], nil)
				if err != nil {
					return err
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					return err
				}
				defer resp.Body.Close()
				body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
				if resp.StatusCode != http.StatusOK {
					return fmt.Errorf("%s: %s: %s", args[0], resp.Status, strings.TrimSpace(string(body)))
				}
				return a.printer().line("%s", strings.TrimSpace(string(body)))
			}
			cc, err := grpc.NewClient(args[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				return err
			}
			defer cc.Close()
			resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			if resp.Status != healthpb.HealthCheckResponse_SERVING {
				return fmt.Errorf("%s: %s", args[0], resp.Status)
			}
			return a.printer().line("%s", resp.Status)
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 3*time.Second, "how long the probe may take")
	return cmd
}
