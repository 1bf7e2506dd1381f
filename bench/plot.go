package bench

import (
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"slices"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// writePlots draws, next to results.json, the fan-out latency
// percentiles against N for each multiplexing setting, the latency by
// percentile of each fan-out N, and the resume time by percentile of each
// resume storm. It returns the files' names.
func writePlots(dir string, r *Results) ([]string, error) {
	var files []string
	var errs []error
	save := func(p *plot.Plot, name string) {
		if err := p.Save(9*vg.Inch, 5.5*vg.Inch, filepath.Join(dir, name)); err != nil {
			errs = append(errs, err)
			return
		}
		files = append(files, name)
	}
	ok := func(f FanoutResult) bool { return f.Error == "" && f.Latency.Count > 0 }

	// Latency against N: one plot per streams-per-connection setting,
	// with the fan-out and scale runs together.
	var perConns []int
	for _, f := range r.Fanout {
		if ok(f) && !slices.Contains(perConns, f.StreamsPerConn) {
			perConns = append(perConns, f.StreamsPerConn)
		}
	}
	for _, pc := range perConns {
		p := plot.New()
		p.Title.Text = fmt.Sprintf("Fan-out latency against subscribers, %d stream(s) per connection", pc)
		p.X.Label.Text = "subscribers (N)"
		p.Y.Label.Text = "put-to-delivery latency (ms)"
		p.X.Scale, p.X.Tick.Marker = plot.LogScale{}, plot.LogTicks{}
		p.Y.Scale, p.Y.Tick.Marker = plot.LogScale{}, plot.LogTicks{}
		p.Legend.Top, p.Legend.Left = true, true
		for ti, target := range Targets {
			for qi, q := range []struct {
				name string
				v    func(Latency) float64
			}{{"p50", func(l Latency) float64 { return l.P50 }}, {"p99", func(l Latency) float64 { return l.P99 }}, {"p99.9", func(l Latency) float64 { return l.P999 }}} {
				var xys plotter.XYs
				for _, f := range r.Fanout {
					if ok(f) && f.StreamsPerConn == pc && f.Target == target {
						xys = append(xys, plotter.XY{X: float64(f.N), Y: math.Max(q.v(f.Latency), 0.001)})
					}
				}
				if len(xys) == 0 {
					continue
				}
				slices.SortFunc(xys, func(a, b plotter.XY) int { return int(a.X - b.X) })
				l, s, err := plotter.NewLinePoints(xys)
				if err != nil {
					errs = append(errs, err)
					continue
				}
				l.Color, s.Color = plotutil.Color(ti), plotutil.Color(ti)
				l.Dashes = plotutil.Dashes(qi)
				s.Shape = plotutil.Shape(ti)
				p.Add(l, s)
				p.Legend.Add(target+" "+q.name, l, s)
			}
		}
		save(p, fmt.Sprintf("fanout-latency-vs-n-spc%d.png", pc))
	}

	// Latency by percentile: one plot per run setting, a line per target.
	type key struct {
		scenario    string
		n, perConns int
	}
	var keys []key
	for _, f := range r.Fanout {
		k := key{f.Scenario, f.N, f.StreamsPerConn}
		if ok(f) && !slices.Contains(keys, k) {
			keys = append(keys, k)
		}
	}
	for _, k := range keys {
		p := percentilePlot(fmt.Sprintf("%s: latency by percentile, N=%d, %d stream(s) per connection", k.scenario, k.n, k.perConns), "put-to-delivery latency (ms)")
		for ti, target := range Targets {
			for _, f := range r.Fanout {
				if ok(f) && f.Target == target && (key{f.Scenario, f.N, f.StreamsPerConn}) == k {
					errs = append(errs, addCDF(p, target, f.CDF, ti))
				}
			}
		}
		save(p, fmt.Sprintf("%s-cdf-n%d-spc%d.png", k.scenario, k.n, k.perConns))
	}

	for _, x := range r.Resume {
		if len(x.CDF) == 0 {
			continue
		}
		p := percentilePlot(fmt.Sprintf("Resume storm: time from node 1's stop to caught up on node 2, N=%d", x.N), "time to resume (ms)")
		errs = append(errs, addCDF(p, "subscribers", x.CDF, 0))
		save(p, fmt.Sprintf("resume-cdf-n%d-spc%d.png", x.N, x.StreamsPerConn))
	}
	return files, errors.Join(errs...)
}

// percentilePlot is a latency distribution plot in the HdrHistogram
// style: the x axis is the percentile, spread so that each further nine
// (90, 99, 99.9, ...) gets the same width, so the tail is visible.
func percentilePlot(title, ylabel string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "percentile"
	p.Y.Label.Text = ylabel
	p.X.Min, p.X.Max = 0, 4
	p.X.Tick.Marker = plot.ConstantTicks{
		{Value: 0, Label: "0%"}, {Value: nines(50), Label: "50%"}, {Value: 1, Label: "90%"},
		{Value: 2, Label: "99%"}, {Value: 3, Label: "99.9%"}, {Value: 4, Label: "99.99%"},
	}
	p.Legend.Top, p.Legend.Left = true, true
	p.Add(plotter.NewGrid())
	return p
}

// nines maps a percentile to the x of a percentilePlot: -log10(1-q/100),
// capped at 4 (99.99%).
func nines(q float64) float64 {
	if q >= 99.99 {
		return 4
	}
	return -math.Log10(1 - q/100)
}

func addCDF(p *plot.Plot, name string, points []CDFPoint, i int) error {
	xys := make(plotter.XYs, 0, len(points))
	for _, pt := range points {
		xys = append(xys, plotter.XY{X: nines(pt.Percentile), Y: pt.Ms})
	}
	l, err := plotter.NewLine(xys)
	if err != nil {
		return err
	}
	l.Color = plotutil.Color(i)
	l.Width = vg.Points(1.5)
	p.Add(l)
	p.Legend.Add(name, l)
	return nil
}
