package source

import (
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"
)

// bytesString views b as a string without copying, for parsing only: the
// string must not outlive the call that receives it.
func bytesString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// scanner walks a JSON text.
type scanner struct {
	b []byte
	i int
}

func (s *scanner) peek() byte {
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *scanner) err(reason DropReason, field, msg string) error {
	if s.i >= len(s.b) {
		msg += " (unexpected end)"
	}
	return &PayloadError{Reason: reason, Field: field, Offset: s.i, Msg: msg}
}

// str reads a string at s (at its '"') and returns its contents: a slice
// of the input when it has no escapes, else the unescaped text in *scratch.
func (s *scanner) str(scratch *[]byte) ([]byte, error) {
	s.i++ // '"'
	start := s.i
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			v := s.b[start:s.i]
			s.i++
			return v, nil
		case c == '\\':
			return s.strEscaped(start, scratch)
		case c < 0x20:
			return nil, s.err(DropInvalid, "", "control character in string")
		}
		s.i++
	}
	return nil, s.err(DropInvalid, "", "unterminated string")
}

func (s *scanner) strEscaped(start int, scratch *[]byte) ([]byte, error) {
	out := append((*scratch)[:0], s.b[start:s.i]...)
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			s.i++
			*scratch = out
			return out, nil
		case c < 0x20:
			return nil, s.err(DropInvalid, "", "control character in string")
		case c != '\\':
			out = append(out, c)
			s.i++
			continue
		}
		if s.i+1 >= len(s.b) {
			break
		}
		e := s.b[s.i+1]
		s.i += 2
		switch e {
		case '"', '\\', '/':
			out = append(out, e)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, ok := s.hex4()
			if !ok {
				return nil, s.err(DropInvalid, "", "bad \\u escape")
			}
			if utf16.IsSurrogate(r) {
				r2 := utf8.RuneError
				if s.i+1 < len(s.b) && s.b[s.i] == '\\' && s.b[s.i+1] == 'u' {
					s.i += 2
					if x, ok := s.hex4(); ok {
						r2 = x
					}
				}
				r = utf16.DecodeRune(r, r2)
			}
			out = utf8.AppendRune(out, r)
		default:
			return nil, s.err(DropInvalid, "", "bad escape")
		}
	}
	return nil, s.err(DropInvalid, "", "unterminated string")
}

func (s *scanner) hex4() (rune, bool) {
	if s.i+4 > len(s.b) {
		return 0, false
	}
	var r rune
	for _, c := range s.b[s.i : s.i+4] {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c - 'a' + 10)
		case c >= 'A' && c <= 'F':
			r |= rune(c - 'A' + 10)
		default:
			return 0, false
		}
	}
	s.i += 4
	return r, true
}

// number reads the characters of a number (validated by the caller's
// strconv.ParseFloat).
func (s *scanner) number() []byte {
	start := s.i
	if s.peek() == '-' {
		s.i++
	}
	for s.i < len(s.b) {
		switch c := s.b[s.i]; {
		case c >= '0' && c <= '9', c == '.', c == 'e', c == 'E':
			s.i++
		case (c == '+' || c == '-') && (s.b[s.i-1] == 'e' || s.b[s.i-1] == 'E'):
			s.i++
		default:
			return s.b[start:s.i]
		}
	}
	return s.b[start:s.i]
}

func (s *scanner) literal(lit string) error {
	if len(s.b)-s.i < len(lit) || string(s.b[s.i:s.i+len(lit)]) != lit {
		return s.err(DropInvalid, "", "unknown literal")
	}
	s.i += len(lit)
	return nil
}

// skip reads over any value.
func (s *scanner) skip(depth int) error {
	if depth >= maxDepth {
		return s.err(DropInvalid, "", "nested too deep")
	}
	switch c := s.peek(); {
	case c == '"':
		return s.strSkip()
	case c == '{' || c == '[':
		closer := byte('}')
		if c == '[' {
			closer = ']'
		}
		for done := s.open(closer); !done; {
			if c == '{' {
				if s.peek() != '"' {
					return s.err(DropInvalid, "", "want a key")
				}
				if err := s.strSkip(); err != nil {
					return err
				}
				if err := s.colon(); err != nil {
					return err
				}
			}
			if err := s.skip(depth + 1); err != nil {
				return err
			}
			var err error
			if done, err = s.next(closer); err != nil {
				return err
			}
		}
		return nil
	case c == '-' || (c >= '0' && c <= '9'):
		if len(s.number()) == 0 || s.b[s.i-1] == '-' {
			return s.err(DropInvalid, "", "malformed number")
		}
		return nil
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	case c == 'N':
		return s.literal("NaN")
	case c == 'I':
		return s.literal("Infinity")
	}
	return s.err(DropInvalid, "", "want a value")
}

// open reads the '{' or '[' at s and the white space after it, and reports
// whether the object or array is empty (then its closer is read too).
func (s *scanner) open(closer byte) (empty bool) {
	s.i++
	s.ws()
	if s.peek() == closer {
		s.i++
		return true
	}
	return false
}

// colon reads the ':' after an object's key, with the white space around
// it.
func (s *scanner) colon() error {
	s.ws()
	if s.peek() != ':' {
		return s.err(DropInvalid, "", "want ':' after a key")
	}
	s.i++
	s.ws()
	return nil
}

// next reads what follows a member of an object or array: a ',' and the
// white space after it, or the closer ('}' or ']'), which ends the object
// or array (done).
func (s *scanner) next(closer byte) (done bool, err error) {
	s.ws()
	switch s.peek() {
	case ',':
		s.i++
		s.ws()
		return false, nil
	case closer:
		s.i++
		return true, nil
	}
	if closer == '}' {
		return false, s.err(DropInvalid, "", "want ',' or '}'")
	}
	return false, s.err(DropInvalid, "", "want ',' or ']'")
}

// strSkip reads over a string without keeping it.
func (s *scanner) strSkip() error {
	s.i++ // '"'
	for s.i < len(s.b) {
		switch c := s.b[s.i]; {
		case c == '"':
			s.i++
			return nil
		case c == '\\':
			s.i += 2
			continue
		case c < 0x20:
			return s.err(DropInvalid, "", "control character in string")
		}
		s.i++
	}
	s.i = len(s.b)
	return s.err(DropInvalid, "", "unterminated string")
}
