// Measurements in image coordinates (pixel centres at x + 0.5), shown in mm
// through Pixel Spacing (row spacing = vertical, column spacing = horizontal).

/** Length of a segment in mm, or in pixels when the image has no spacing. */
export function lengthOf(points, pixelSpacing) {
  const [a, b] = points;
  const dx = b.x - a.x;
  const dy = b.y - a.y;
  if (pixelSpacing) {
    const [rowSpacing, columnSpacing] = pixelSpacing;
    return { value: Math.hypot(dx * columnSpacing, dy * rowSpacing), unit: 'mm' };
  }
  return { value: Math.hypot(dx, dy), unit: 'px' };
}

/** Angle at the middle point, in degrees (physical, so anisotropic pixels are honoured). */
export function angleOf(points, pixelSpacing) {
  const [a, vertex, c] = points;
  const [sy, sx] = pixelSpacing || [1, 1];
  const ux = (a.x - vertex.x) * sx;
  const uy = (a.y - vertex.y) * sy;
  const vx = (c.x - vertex.x) * sx;
  const vy = (c.y - vertex.y) * sy;
  const norms = Math.hypot(ux, uy) * Math.hypot(vx, vy);
  if (norms === 0) return { value: 0, unit: '°' };
  const cos = Math.min(1, Math.max(-1, (ux * vx + uy * vy) / norms));
  return { value: (Math.acos(cos) * 180) / Math.PI, unit: '°' };
}

export function measure(m, pixelSpacing) {
  return m.type === 'angle' ? angleOf(m.points, pixelSpacing) : lengthOf(m.points, pixelSpacing);
}

export function label(result) {
  return result.unit === '°' ? `${result.value.toFixed(1)}°` : `${result.value.toFixed(1)} ${result.unit}`;
}

/** Draw measurements; `toScreen` maps image to canvas CSS pixels. */
export function drawMeasurements(ctx, list, toScreen, pixelSpacing) {
  ctx.save();
  ctx.lineWidth = 1.5;
  ctx.strokeStyle = '#ffe066';
  ctx.fillStyle = '#ffe066';
  ctx.font = '13px system-ui, sans-serif';
  ctx.shadowColor = '#000';
  ctx.shadowBlur = 3;
  for (const m of list) {
    const pts = m.points.map(toScreen);
    ctx.beginPath();
    pts.forEach((p, i) => (i ? ctx.lineTo(p.x, p.y) : ctx.moveTo(p.x, p.y)));
    ctx.stroke();
    for (const p of pts) {
      ctx.beginPath();
      ctx.arc(p.x, p.y, 3, 0, Math.PI * 2);
      ctx.stroke();
    }
    if (m.type === 'angle' && pts.length < 3) continue;
    const text = label(measure(m, pixelSpacing));
    const anchor = m.type === 'angle' ? pts[1] : pts[1];
    ctx.fillText(text, anchor.x + 8, anchor.y - 8);
  }
  ctx.restore();
}
