package dify

import (
	"bufio"
	"errors"
	"io"
)

// maxEventBytes bounds one server-sent event's data; a longer one is an
// error rather than unbounded memory.
const maxEventBytes = 8 << 20

// errEventTooLarge: an event's data exceeds maxEventBytes.
var errEventTooLarge = errors.New("server-sent event too large")

// sseReader reads the data of server-sent events (text/event-stream) as the
// HTML standard defines them: lines end in LF, CRLF or CR; an empty line
// ends an event; "data:" lines are joined with LF; one space after the colon
// is dropped; comments (":...") and the fields event, id and retry are
// ignored, since Dify names the event inside its JSON. An event without
// data (Dify's "event: ping") is skipped.
type sseReader struct {
	r   *bufio.Reader
	max int
}

func newSSEReader(r io.Reader) *sseReader {
	return &sseReader{r: bufio.NewReaderSize(r, 16<<10), max: maxEventBytes}
}

// Next returns the data of the next event. At the end of the stream it
// returns io.EOF; an event cut off by the end of the stream (no empty line
// after it) is returned first if it has data.
func (s *sseReader) Next() ([]byte, error) {
	var data []byte
	has := false
	for {
		line, err := s.line()
		if err != nil {
			if errors.Is(err, io.EOF) && has {
				return data, nil
			}
			return nil, err
		}
		if len(line) == 0 {
			if has {
				return data, nil
			}
			continue
		}
		if line[0] == ':' {
			continue
		}
		field, value := line, []byte(nil)
		for i, c := range line {
			if c == ':' {
				field, value = line[:i], line[i+1:]
				if len(value) > 0 && value[0] == ' ' {
					value = value[1:]
				}
				break
			}
		}
		if string(field) != "data" {
			continue
		}
		if has {
			data = append(data, '\n')
		}
		data = append(data, value...)
		has = true
		if len(data) > s.max {
			return nil, errEventTooLarge
		}
	}
}

// line reads one line without its end (LF, CRLF or CR). It returns io.EOF
// only when nothing was read.
func (s *sseReader) line() ([]byte, error) {
	var out []byte
	for {
		c, err := s.r.ReadByte()
		if err != nil {
			if errors.Is(err, io.EOF) && len(out) > 0 {
				return out, nil
			}
			return nil, err
		}
		switch c {
		case '\n':
			return out, nil
		case '\r':
			if next, err := s.r.Peek(1); err == nil && next[0] == '\n' {
				s.r.ReadByte()
			}
			return out, nil
		}
		out = append(out, c)
		if len(out) > s.max {
			return nil, errEventTooLarge
		}
	}
}
