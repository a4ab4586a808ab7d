package perf

import (
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"math"
	"strconv"
	"unicode"
)

// Series is one panel of a plot: a named line over time.
type Series struct {
	Name string    // panel title, e.g. "RSS (MB)"
	X    []float64 // seconds since the start
	Y    []float64
	// Mark, when > 0, draws a vertical dashed line at this x (the end of
	// the warm-up).
	Mark float64
}

// Plot size and colours.
const (
	panelW, panelH = 640, 180
	marginL        = 64
	marginR        = 16
	marginT        = 22
	marginB        = 26
)

var (
	colBG   = color.RGBA{255, 255, 255, 255}
	colAxis = color.RGBA{60, 60, 60, 255}
	colGrid = color.RGBA{225, 225, 225, 255}
	colLine = color.RGBA{31, 119, 180, 255}
	colMark = color.RGBA{214, 39, 40, 255}
	colText = color.RGBA{20, 20, 20, 255}
)

// Plot draws the series as panels stacked vertically, each with its own y
// axis from 0 (or its minimum, if negative) to a little above its maximum,
// and a shared time axis in seconds.
func Plot(series []Series) *image.RGBA {
	h := panelH * max(len(series), 1)
	img := image.NewRGBA(image.Rect(0, 0, panelW, h))
	fill(img, img.Bounds(), colBG)
	for i, s := range series {
		drawPanel(img, image.Rect(0, i*panelH, panelW, (i+1)*panelH), s)
	}
	return img
}

// WritePNG encodes the plot of the series as PNG.
func WritePNG(w io.Writer, series []Series) error {
	if err := png.Encode(w, Plot(series)); err != nil {
		return fmt.Errorf("encode plot: %w", err)
	}
	return nil
}

func drawPanel(img *image.RGBA, r image.Rectangle, s Series) {
	area := image.Rect(r.Min.X+marginL, r.Min.Y+marginT, r.Max.X-marginR, r.Max.Y-marginB)
	drawText(img, r.Min.X+marginL, r.Min.Y+6, s.Name, colText)
	xmin, xmax := rangeOf(s.X)
	ymin, ymax := rangeOf(s.Y)
	ymin = math.Min(ymin, 0)
	if ymax <= ymin {
		ymax = ymin + 1
	}
	ymax = ymin + (ymax-ymin)*1.1
	if xmax <= xmin {
		xmax = xmin + 1
	}
	px := func(x float64) int {
		return area.Min.X + int(math.Round((x-xmin)/(xmax-xmin)*float64(area.Dx()-1)))
	}
	py := func(y float64) int {
		return area.Max.Y - 1 - int(math.Round((y-ymin)/(ymax-ymin)*float64(area.Dy()-1)))
	}
	// Grid and tick labels: 4 steps on each axis.
	for i := 0; i <= 4; i++ {
		y := ymin + (ymax-ymin)*float64(i)/4
		yy := py(y)
		hline(img, area.Min.X, area.Max.X, yy, colGrid)
		lbl := tick(y)
		drawText(img, area.Min.X-6-textWidth(lbl), yy-3, lbl, colText)
		x := xmin + (xmax-xmin)*float64(i)/4
		xx := px(x)
		vline(img, xx, area.Min.Y, area.Max.Y, colGrid)
		lbl = tick(x)
		drawText(img, xx-textWidth(lbl)/2, area.Max.Y+5, lbl, colText)
	}
	drawText(img, area.Max.X-textWidth("S"), area.Max.Y+15, "S", colText)
	hline(img, area.Min.X, area.Max.X, area.Max.Y-1, colAxis)
	vline(img, area.Min.X, area.Min.Y, area.Max.Y, colAxis)
	if s.Mark > xmin && s.Mark < xmax {
		for y := area.Min.Y; y < area.Max.Y; y += 6 {
			vline(img, px(s.Mark), y, min(y+3, area.Max.Y), colMark)
		}
	}
	n := min(len(s.X), len(s.Y))
	for i := 1; i < n; i++ {
		line(img, px(s.X[i-1]), py(s.Y[i-1]), px(s.X[i]), py(s.Y[i]), colLine)
	}
	if n == 1 {
		fill(img, image.Rect(px(s.X[0])-1, py(s.Y[0])-1, px(s.X[0])+2, py(s.Y[0])+2), colLine)
	}
}

func rangeOf(v []float64) (lo, hi float64) {
	if len(v) == 0 {
		return 0, 1
	}
	lo, hi = v[0], v[0]
	for _, x := range v {
		lo, hi = math.Min(lo, x), math.Max(hi, x)
	}
	return lo, hi
}

// tick formats an axis value with up to 3 significant digits.
func tick(v float64) string {
	switch a := math.Abs(v); {
	case a >= 1e6:
		return strconv.FormatFloat(v/1e6, 'f', 1, 64) + "M"
	case a >= 1e4:
		return strconv.FormatFloat(v/1e3, 'f', 0, 64) + "K"
	case a >= 100 || a == 0:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
}

func fill(img *image.RGBA, r image.Rectangle, c color.RGBA) {
	r = r.Intersect(img.Bounds())
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			img.SetRGBA(x, y, c)
		}
	}
}

func hline(img *image.RGBA, x0, x1, y int, c color.RGBA) {
	for x := x0; x < x1; x++ {
		img.SetRGBA(x, y, c)
	}
}

func vline(img *image.RGBA, x, y0, y1 int, c color.RGBA) {
	for y := y0; y < y1; y++ {
		img.SetRGBA(x, y, c)
	}
}

// line draws with Bresenham's algorithm, two pixels thick.
func line(img *image.RGBA, x0, y0, x1, y1 int, c color.RGBA) {
	dx, dy := abs(x1-x0), -abs(y1-y0)
	sx, sy := sign(x1-x0), sign(y1-y0)
	e := dx + dy
	for {
		img.SetRGBA(x0, y0, c)
		img.SetRGBA(x0, y0+1, c)
		if x0 == x1 && y0 == y1 {
			return
		}
		e2 := 2 * e
		if e2 >= dy {
			e += dy
			x0 += sx
		}
		if e2 <= dx {
			e += dx
			y0 += sy
		}
	}
}

func abs(v int) int { return max(v, -v) }

func sign(v int) int {
	switch {
	case v > 0:
		return 1
	case v < 0:
		return -1
	}
	return 0
}

// textWidth is the width in pixels of s in the 5×7 font.
func textWidth(s string) int { return 6 * len([]rune(s)) }

// drawText draws s with its top-left corner at (x, y); unknown characters
// are drawn as '?'.
func drawText(img *image.RGBA, x, y int, s string, c color.RGBA) {
	for _, r := range s {
		g, ok := font5x7[unicode.ToUpper(r)]
		if !ok {
			g = font5x7['?']
		}
		for row := range 7 {
			for col := range 5 {
				if g[row]&(0x10>>col) != 0 {
					img.SetRGBA(x+col, y+row, c)
				}
			}
		}
		x += 6
	}
}
