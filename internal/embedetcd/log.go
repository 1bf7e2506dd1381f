package embedetcd

import (
	"strings"

	"go.uber.org/zap/zapcore"
)

// storageVersionMessage is what etcd's version monitor logs at ERROR when
// it cannot update the storage version.
const storageVersionMessage = "failed to update storage version"

// quietCore passes etcd's logs on, except one ERROR that is not an error:
// on a fresh data directory etcd's version monitor runs as soon as the
// cluster version is set, which can be before the backend has committed
// its first term, and fails with "missing term information"; its next
// pass, seconds later, succeeds. That entry is logged at DEBUG instead, so
// that a first `confetti dev` start shows no error. Any other failure to
// update the storage version stays an ERROR.
type quietCore struct {
	zapcore.Core
}

func (c quietCore) With(fields []zapcore.Field) zapcore.Core {
	return quietCore{c.Core.With(fields)}
}

func (c quietCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if e.Message != storageVersionMessage {
		return c.Core.Check(e, ce)
	}
	// Which level applies depends on the fields, which Write sees.
	if c.Core.Enabled(e.Level) || c.Core.Enabled(zapcore.DebugLevel) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c quietCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	if e.Message == storageVersionMessage && missingTerm(fields) {
		e.Level = zapcore.DebugLevel
	}
	if !c.Core.Enabled(e.Level) {
		return nil
	}
	return c.Core.Write(e, fields)
}

// missingTerm reports whether the error field is the transient "missing
// term information" of a backend that has not committed yet.
func missingTerm(fields []zapcore.Field) bool {
	for _, f := range fields {
		if err, ok := f.Interface.(error); ok && f.Type == zapcore.ErrorType && strings.Contains(err.Error(), "missing term information") {
			return true
		}
	}
	return false
}
