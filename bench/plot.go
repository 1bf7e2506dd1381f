package bench

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
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

	// Latency against N: one figure per streams-per-connection setting,
	// a panel per target, the fan-out and scale runs together.
	var perConns []int
	for _, f := range r.Fanout {
		if ok(f) && !slices.Contains(perConns, f.StreamsPerConn) {
			perConns = append(perConns, f.StreamsPerConn)
		}
	}
	for _, pc := range perConns {
		var runs []FanoutResult
		for _, f := range r.Fanout {
			if ok(f) && f.StreamsPerConn == pc {
				runs = append(runs, f)
			}
		}
		name := fmt.Sprintf("fanout-latency-vs-n-spc%d.png", pc)
		if err := latencyVsN(filepath.Join(dir, name), pc, runs); err != nil {
			errs = append(errs, err)
			continue
		}
		files = append(files, name)
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

// percentiles are the percentiles latencyVsN draws.
var percentiles = []struct {
	name string
	of   func(Latency) float64
}{
	{"p50", func(l Latency) float64 { return l.P50 }},
	{"p99", func(l Latency) float64 { return l.P99 }},
	{"p99.9", func(l Latency) float64 { return l.P999 }},
}

// latencyVsN draws, for each target of runs, its latency percentiles
// against N, in side-by-side panels sharing their axes.
func latencyVsN(file string, perConn int, runs []FanoutResult) error {
	var plots []*plot.Plot
	var ns []float64
	lo, hi := math.Inf(1), 0.0
	for _, f := range runs {
		if !slices.Contains(ns, float64(f.N)) {
			ns = append(ns, float64(f.N))
		}
		for _, q := range percentiles {
			v := math.Max(q.of(f.Latency), 0.001)
			lo, hi = math.Min(lo, v), math.Max(hi, v)
		}
	}
	slices.Sort(ns)
	var nTicks plot.ConstantTicks
	for _, n := range ns {
		nTicks = append(nTicks, plot.Tick{Value: n, Label: count(int64(n))})
	}
	for ti, target := range Targets {
		// One point per N: a scale run at an N the fanout scenario also
		// ran is left out.
		var mine []FanoutResult
		for _, f := range runs {
			if f.Target == target && !slices.ContainsFunc(mine, func(m FanoutResult) bool { return m.N == f.N }) {
				mine = append(mine, f)
			}
		}
		if len(mine) == 0 {
			continue
		}
		slices.SortFunc(mine, func(a, b FanoutResult) int { return a.N - b.N })
		p := plot.New()
		p.Title.Text = fmt.Sprintf("%s, %d stream(s)/conn", target, perConn)
		p.X.Label.Text = "subscribers (N)"
		p.Y.Label.Text = "latency (ms)"
		p.X.Scale, p.X.Tick.Marker = plot.LogScale{}, nTicks
		p.X.Min, p.X.Max = ns[0]/1.5, ns[len(ns)-1]*1.5
		p.Y.Scale, p.Y.Tick.Marker = plot.LogScale{}, msTicks{}
		p.Y.Min, p.Y.Max = lo/1.5, hi*1.5
		p.Legend.Top, p.Legend.Left = true, true
		p.Add(plotter.NewGrid())
		for qi, q := range percentiles {
			xys := make(plotter.XYs, len(mine))
			for i, f := range mine {
				xys[i] = plotter.XY{X: float64(f.N), Y: math.Max(q.of(f.Latency), 0.001)}
			}
			l, sc, err := plotter.NewLinePoints(xys)
			if err != nil {
				return err
			}
			l.Color, sc.Color = plotutil.Color(ti), plotutil.Color(ti)
			l.Dashes, sc.Shape = plotutil.Dashes(qi), plotutil.Shape(qi)
			p.Add(l, sc)
			p.Legend.Add(q.name, l, sc)
		}
		plots = append(plots, p)
	}
	if len(plots) == 0 {
		return nil
	}
	const tile = 4 * vg.Inch
	img := vgimg.New(vg.Length(len(plots))*tile, tile)
	dc := draw.New(img)
	canvases := plot.Align([][]*plot.Plot{plots}, draw.Tiles{Rows: 1, Cols: len(plots), PadX: vg.Millimeter * 4, PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2}, dc)
	for i, p := range plots {
		p.Draw(canvases[0][i])
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// msTicks labels a logarithmic latency axis at 1, 2 and 5 times each
// power of ten, in plain numbers.
type msTicks struct{}

func (msTicks) Ticks(lo, hi float64) []plot.Tick {
	var ticks []plot.Tick
	for e := math.Floor(math.Log10(lo)); e <= math.Ceil(math.Log10(hi)); e++ {
		for _, m := range []float64{1, 2, 5} {
			if v := m * math.Pow(10, e); v >= lo && v <= hi {
				ticks = append(ticks, plot.Tick{Value: v, Label: strconv.FormatFloat(v, 'g', -1, 64)})
			}
		}
	}
	if len(ticks) < 2 {
		ticks = append(ticks, plot.Tick{Value: lo, Label: strconv.FormatFloat(lo, 'g', 2, 64)}, plot.Tick{Value: hi, Label: strconv.FormatFloat(hi, 'g', 2, 64)})
	}
	return ticks
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
