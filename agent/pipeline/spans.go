package pipeline

import (
	"context"
	"time"
)

// WindowSpan is one window a Model.Score call scores: its key (behaviour
// streams), its span and its place among the windows that end at the same
// time (record.IDSeq).
type WindowSpan struct {
	Key        string
	Start, End time.Time
	Seq        int
}

type spansKey struct{}

// Spans returns the windows of the Model.Score call ctx was given for, in
// the order of its windows and scores, when the pipeline made the call; nil
// otherwise. The slice is valid during the call only. A model that wraps another (the daemon's shadow run) uses it to
// record what it scored.
func Spans(ctx context.Context) []WindowSpan {
	s, _ := ctx.Value(spansKey{}).([]WindowSpan)
	return s
}

// withSpans returns ctx carrying the spans of items.
func withSpans(ctx context.Context, buf []WindowSpan, items []pendingWindow) ([]WindowSpan, context.Context) {
	buf = buf[:0]
	for _, pw := range items {
		key := ""
		if pw.ks != nil {
			key = pw.ks.key
		}
		buf = append(buf, WindowSpan{Key: key, Start: pw.start, End: pw.end, Seq: pw.seq})
	}
	return buf, context.WithValue(ctx, spansKey{}, buf)
}
