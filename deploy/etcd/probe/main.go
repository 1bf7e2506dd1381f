// Command probe is the health check of the etcd image, which holds
// nothing but static binaries: it asks a member's /health endpoint
// (served without auth, unlike the KV API etcdctl endpoint health uses)
// and exits 0 when the member reports itself healthy.
package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"time"
)

func main() {
	url := "http://127.0.0.1:2379/health"
	if len(os.Args) > 1 {
		url = os.Args[1]
	}
	c := http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer resp.Body.Close()
	var h struct {
		Health string `json:"health"`
		Reason string `json:"reason"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil || resp.StatusCode != http.StatusOK || h.Health != "true" {
		fmt.Fprintf(os.Stderr, "%s: %s health=%q reason=%q %v\n", url, resp.Status, h.Health, h.Reason, err)
		os.Exit(1)
	}
	fmt.Println("healthy")
}
