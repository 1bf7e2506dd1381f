package bench

import (
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// newHistogram records latencies in microseconds, from 1 µs to 10
// minutes, to three significant digits.
func newHistogram() *hdrhistogram.Histogram {
	return hdrhistogram.New(1, int64(10*time.Minute/time.Microsecond), 3)
}

// record adds one latency; a latency outside the histogram's range is
// clamped to it, so that no delivery goes uncounted.
func record(h *hdrhistogram.Histogram, d time.Duration) {
	us := max(1, min(d.Microseconds(), h.HighestTrackableValue()))
	h.RecordValue(us)
}

// Latency summarizes a latency distribution, in milliseconds.
type Latency struct {
	Count int64   `json:"count"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p999_ms"`
	Max   float64 `json:"max_ms"`
	Mean  float64 `json:"mean_ms"`
}

// CDFPoint is one point of a latency distribution: Percentile percent of
// the samples took at most Ms milliseconds.
type CDFPoint struct {
	Percentile float64 `json:"percentile"`
	Ms         float64 `json:"ms"`
}

func summarizeHistogram(h *hdrhistogram.Histogram) Latency {
	ms := func(us int64) float64 { return float64(us) / 1000 }
	return Latency{
		Count: h.TotalCount(),
		P50:   ms(h.ValueAtQuantile(50)),
		P90:   ms(h.ValueAtQuantile(90)),
		P99:   ms(h.ValueAtQuantile(99)),
		P999:  ms(h.ValueAtQuantile(99.9)),
		Max:   ms(h.Max()),
		Mean:  h.Mean() / 1000,
	}
}

// cdf samples the distribution at every whole percentile and ever finer
// steps towards the maximum.
func cdf(h *hdrhistogram.Histogram) []CDFPoint {
	if h.TotalCount() == 0 {
		return nil
	}
	var qs []float64
	for q := 0; q <= 99; q++ {
		qs = append(qs, float64(q))
	}
	for i := 1; i <= 9; i++ {
		qs = append(qs, 99+float64(i)/10)
	}
	for i := 1; i <= 9; i++ {
		qs = append(qs, 99.9+float64(i)/100)
	}
	qs = append(qs, 100)
	out := make([]CDFPoint, len(qs))
	for i, q := range qs {
		out[i] = CDFPoint{Percentile: q, Ms: float64(h.ValueAtQuantile(q)) / 1000}
	}
	return out
}

// summarizeDurations is the Latency and CDF of samples held in full.
func summarizeDurations(ds []time.Duration) (Latency, []CDFPoint) {
	h := newHistogram()
	for _, d := range ds {
		record(h, d)
	}
	return summarizeHistogram(h), cdf(h)
}
