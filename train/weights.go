package train

// denseF32 returns the f32 weight of a dense f32 layer without copying.
func denseF32(l BaseLinear) ([]float32, bool) {
	return nil, false
}

// expandWeight writes the [Out, In] f32 weight of l into dst when l's type is known.
func expandWeight(l BaseLinear, dst []float32) bool {
	return false
}
