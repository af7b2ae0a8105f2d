package data

import (
	"bufio"
	"fmt"
	"html"
	"math"

	"github.com/lorakit/lorakit/internal/atomicfile"
)

// WriteHistogramSVG draws h as a bar chart with its cut values as red vertical lines (atomically).
func WriteHistogramSVG(path string, h Histogram, title string) error {
	const W, H, left, right, top, bottom = 640.0, 360.0, 56.0, 16.0, 36.0, 44.0
	pw, ph := W-left-right, H-top-bottom
	maxC := 1
	for _, c := range h.Counts {
		maxC = max(maxC, c)
	}
	x := func(v float64) float64 {
		if h.Hi <= h.Lo {
			return left
		}
		return left + (v-h.Lo)/(h.Hi-h.Lo)*pw
	}
	return atomicfile.Write(path, func(w *bufio.Writer) error {
		fmt.Fprintf(w, `<svg xmlns="http://www.w3.org/2000/svg" width="%g" height="%g" viewBox="0 0 %g %g" font-family="sans-serif" font-size="12">`+"\n", W, H, W, H)
		fmt.Fprintf(w, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
		fmt.Fprintf(w, `<text x="%g" y="22" font-size="14">%s</text>`+"\n", left, html.EscapeString(title))
		n := len(h.Counts)
		for i, c := range h.Counts {
			bh := float64(c) / float64(maxC) * ph
			bx := left + float64(i)*pw/float64(max(n, 1))
			fmt.Fprintf(w, `<rect x="%.2f" y="%.2f" width="%.2f" height="%.2f" fill="#4e79a7"/>`+"\n",
				bx+0.5, top+ph-bh, pw/float64(max(n, 1))-1, bh)
		}
		fmt.Fprintf(w, `<line x1="%g" y1="%g" x2="%g" y2="%g" stroke="black"/>`+"\n", left, top+ph, left+pw, top+ph)
		fmt.Fprintf(w, `<line x1="%g" y1="%g" x2="%g" y2="%g" stroke="black"/>`+"\n", left, top, left, top+ph)
		for i := 0; i <= 4; i++ {
			v := h.Lo + (h.Hi-h.Lo)*float64(i)/4
			fmt.Fprintf(w, `<text x="%.2f" y="%g" text-anchor="middle">%.3g</text>`+"\n", x(v), top+ph+16, v)
		}
		fmt.Fprintf(w, `<text x="%g" y="%g" text-anchor="middle">%s</text>`+"\n", left+pw/2, H-6, html.EscapeString(h.Metric))
		fmt.Fprintf(w, `<text x="%g" y="%g" text-anchor="end">%d</text>`+"\n", left-4, top+8, maxC)
		fmt.Fprintf(w, `<text x="%g" y="%g" text-anchor="end">0</text>`+"\n", left-4, top+ph)
		for _, c := range h.Cuts {
			if math.IsNaN(c) || math.IsInf(c, 0) {
				continue
			}
			cx := math.Max(left, math.Min(left+pw, x(c)))
			fmt.Fprintf(w, `<line x1="%.2f" y1="%g" x2="%.2f" y2="%g" stroke="#e15759" stroke-width="2" stroke-dasharray="6 3"/>`+"\n", cx, top, cx, top+ph)
			fmt.Fprintf(w, `<text x="%.2f" y="%g" fill="#e15759" text-anchor="middle">cut %.4g</text>`+"\n", cx, top-4, c)
		}
		_, err := fmt.Fprintln(w, `</svg>`)
		return err
	})
}
