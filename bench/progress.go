package bench

import (
	"io"
	"os"

	"github.com/cheggaaa/pb/v3"
)

// progress is a progress bar on a terminal, and nothing elsewhere (logs
// and CI output stay readable). A nil *progress does nothing.
type progress struct {
	bar *pb.ProgressBar
}

// startProgress starts a bar of total steps named label on w when w is a
// terminal.
func startProgress(w io.Writer, label string, total int) *progress {
	f, ok := w.(*os.File)
	if !ok || !isTerminal(f) {
		return nil
	}
	bar := pb.New(total).SetWriter(w).SetTemplateString(`{{string . "label"}} {{counters . }} {{bar . }} {{etime . }}`)
	bar.Set("label", label)
	return &progress{bar: bar.Start()}
}

func (p *progress) step() {
	if p != nil {
		p.bar.Increment()
	}
}

func (p *progress) finish() {
	if p != nil {
		p.bar.Finish()
	}
}
