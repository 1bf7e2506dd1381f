package router

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
)

// BenchmarkGateway measures requests per second and p99 latency of GET
// requests from 16 concurrent keep-alive clients: straight to a local
// backend (direct), through the router to the same backend (gateway), and
// through the router while the route flips between two upstreams every
// 10 ms (route-change: each flip rebuilds and swaps the table). Any failed
// request fails the benchmark.
//
//	go test -run '^$' -bench BenchmarkGateway -benchtime 20000x ./gateway/router/
func BenchmarkGateway(b *testing.B) {
	one, two := backend(b, "one"), backend(b, "two")
	upstreams := map[string]string{
		"/upstreams/one": fmt.Sprintf(`{"nodes":{%q:1}}`, addr(one)),
		"/upstreams/two": fmt.Sprintf(`{"nodes":{%q:1}}`, addr(two)),
	}
	config := func(to string) map[string]string {
		m := map[string]string{"/routes/r": fmt.Sprintf(`{"uri":"/hello","upstream_id":%q}`, to)}
		for k, v := range upstreams {
			m[k] = v
		}
		return m
	}
	src := newSource(config("one"))
	r, err := New(src, Config{Logger: zap.NewNop()})
	if err != nil {
		b.Fatal(err)
	}
	gw := httptest.NewServer(r)
	defer gw.Close()

	b.Run("direct", func(b *testing.B) { load(b, one.URL+"/hello", nil) })
	b.Run("gateway", func(b *testing.B) { load(b, gw.URL+"/hello", nil) })
	b.Run("route-change", func(b *testing.B) {
		flips := 0
		load(b, gw.URL+"/hello", func(stop <-chan struct{}) {
			t := time.NewTicker(10 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-stop:
					b.ReportMetric(float64(flips), "route-changes")
					return
				case <-t.C:
				}
				flips++
				src.set(config([]string{"one", "two"}[flips%2]))
			}
		})
	})
}

// load sends b.N GETs to url from 16 workers, with during running beside
// them, and reports req/s and p99.
func load(b *testing.B, url string, during func(stop <-chan struct{})) {
	const workers = 16
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	defer client.CloseIdleConnections()
	var (
		next     atomic.Int64
		failures atomic.Int64
		mu       sync.Mutex
		lat      = make([]time.Duration, 0, b.N)
		wg       sync.WaitGroup
	)
	stop, stopped := make(chan struct{}), make(chan struct{})
	if during != nil {
		go func() {
			defer close(stopped)
			during(stop)
		}()
	} else {
		close(stopped)
	}
	b.ResetTimer()
	start := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := make([]time.Duration, 0, b.N/workers+1)
			for next.Add(1) <= int64(b.N) {
				t0 := time.Now()
				resp, err := client.Get(url)
				if err != nil {
					failures.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					failures.Add(1)
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	close(stop)
	<-stopped
	if n := failures.Load(); n != 0 {
		b.Fatalf("%d of %d requests failed", n, b.N)
	}
	slices.Sort(lat)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "req/s")
	b.ReportMetric(float64(lat[(len(lat)-1)*99/100].Microseconds()), "p99-µs")
}
