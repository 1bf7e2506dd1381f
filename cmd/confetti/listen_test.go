package main

import (
	"io"
	"net"
	"strconv"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// TestDefaultAddressesAreLoopback checks the default of every flag of
// every command that is a host:port: none listens on every interface
// unless the flag says so (":7700", "0.0.0.0:7700").
func TestDefaultAddressesAreLoopback(t *testing.T) {
	listen := map[string]bool{}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		c.LocalFlags().VisitAll(func(f *pflag.Flag) {
			for _, v := range strings.Split(strings.Trim(f.DefValue, "[]"), ",") {
				host, port, err := net.SplitHostPort(v)
				if err != nil {
					continue
				}
				if _, err := strconv.Atoi(port); err != nil {
					continue
				}
				if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
					t.Errorf("%s --%s defaults to %q, which is not a loopback address", c.CommandPath(), f.Name, f.DefValue)
				}
				if f.Name == "listen" || strings.HasSuffix(f.Name, "-addr") {
					listen[c.CommandPath()+" --"+f.Name] = true
				}
			}
		})
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(newRootCommand(newApp(io.Discard, io.Discard)))
	for _, want := range []string{
		"confetti proxy --listen-addr", "confetti proxy --metrics-addr", "confetti proxy --http-addr",
		"confetti cache --listen-addr", "confetti cache --metrics-addr", "confetti gateway --listen",
	} {
		if !listen[want] {
			t.Errorf("%s has no default address to check (checked %v)", want, listen)
		}
	}
}
