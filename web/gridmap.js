// A canvas map of grid polygons, drawn fast enough for 50,000 grids.
//
// ECharts' map series, measured in headless chromium here (bench/map_page_scale.py), took ~0.8 s per colour
// update and ~0.6 s per pan/zoom step at only 5,000 grids: one scene-graph element per region. Here the
// polygons are projected once and batched into Path2D objects per patch of the map and colour (a patch is
// rebuilt only when one of its grids changes colour) and for the borders (built once), so a redraw is a few
// hundred fill/stroke calls under one transform.
// Batches hold CHUNK polygons: Chromium's path building slows down quadratically with the number of
// subpaths in one path (50,000 in one Path2D took 17 s to build, in 256-polygon batches 0.1 s).
// While the user pans or zooms, the last full drawing is moved as a bitmap (one drawImage per frame) and
// redrawn sharp once the gesture pauses. Picking uses a bucket index and an exact point-in-polygon test.
"use strict";

const CHUNK = 256; // polygons per Path2D batch
const SETTLE_MS = 120; // full redraw this long after the last pan/zoom event

class GridMap {
  constructor(container, { colours, onClick, onHover }) {
    this.container = container;
    this.colours = colours;
    this.onClick = onClick;
    this.onHover = onHover;
    this.canvas = document.createElement("canvas");
    this.canvas.style.width = "100%";
    this.canvas.style.height = "100%";
    this.canvas.style.display = "block";
    container.appendChild(this.canvas);
    this.context = this.canvas.getContext("2d");
    this.rings = []; // per grid: Float64Array [x0, y0, x1, y1, ...] in projected units
    this.boxes = []; // per grid: [minX, minY, maxX, maxY]
    this.levels = [];
    this.chunks = [];
    this.selected = -1;
    this.marked = []; // grids with an open incident: outlined (their colour stays readable)
    this.view = { scale: 1, x: 0, y: 0 }; // screen = world * scale + (x, y)
    this.frame = 0;
    this.resize();
    new ResizeObserver(() => this.resize()).observe(container);
    this.listen();
  }

  // Equirectangular with the latitude's cosine: metres are square near the district, and y grows down.
  setShapes(shapes) {
    let minLon = Infinity, minLat = Infinity, maxLon = -Infinity, maxLat = -Infinity;
    for (const shape of shapes) {
      for (const [lon, lat] of shape.ring) {
        if (lon < minLon) minLon = lon; if (lon > maxLon) maxLon = lon;
        if (lat < minLat) minLat = lat; if (lat > maxLat) maxLat = lat;
      }
    }
    const k = Math.cos(((minLat + maxLat) / 2) * Math.PI / 180);
    this.origin = { lon: minLon, lat: maxLat, k, unit: 1000 }; // ~1000 units per degree of latitude
    this.rings = shapes.map((shape) => {
      const ring = new Float64Array(shape.ring.length * 2);
      shape.ring.forEach(([lon, lat], i) => {
        const [x, y] = this.project(lon, lat);
        ring[2 * i] = x; ring[2 * i + 1] = y;
      });
      return ring;
    });
    this.boxes = this.rings.map((ring) => {
      let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
      for (let i = 0; i < ring.length; i += 2) {
        x0 = Math.min(x0, ring[i]); x1 = Math.max(x1, ring[i]);
        y0 = Math.min(y0, ring[i + 1]); y1 = Math.max(y1, ring[i + 1]);
      }
      return [x0, y0, x1, y1];
    });
    this.world = this.project(maxLon, minLat); // bottom-right corner
    this.borders = this.batch(this.rings.map((_, grid) => grid));
    this.chunks = [];
    this.buildIndex();
    this.fit();
  }

  project(lon, lat) {
    const o = this.origin;
    return [(lon - o.lon) * o.k * o.unit, (o.lat - lat) * o.unit];
  }

  batch(grids) {
    const paths = [];
    grids.forEach((grid, i) => {
      if (i % CHUNK === 0) paths.push(new Path2D());
      this.trace(paths[paths.length - 1], this.rings[grid]);
    });
    return paths;
  }

  trace(path, ring) {
    path.moveTo(ring[0], ring[1]);
    for (let i = 2; i < ring.length; i += 2) path.lineTo(ring[i], ring[i + 1]);
    path.closePath();
  }

  buildIndex() {
    const cells = Math.max(1, Math.ceil(Math.sqrt(this.rings.length / 4)));
    const [w, h] = this.world;
    this.index = { cells, cw: (w || 1) / cells, ch: (h || 1) / cells, buckets: new Map() };
    this.boxes.forEach(([x0, y0, x1, y1], grid) => {
      for (const cx of this.span(x0, x1, this.index.cw)) {
        for (const cy of this.span(y0, y1, this.index.ch)) {
          const key = cy * (cells + 1) + cx;
          if (!this.index.buckets.has(key)) this.index.buckets.set(key, []);
          this.index.buckets.get(key).push(grid);
        }
      }
    });
  }

  *span(a, b, size) {
    for (let c = Math.floor(a / size); c <= Math.floor(b / size); c++) yield c;
  }

  // levels: one level name per grid, in shapes order. Grids are kept in chunks of CHUNK consecutive grids
  // (the registry lists a community's grids together, so a chunk is a patch of the map), each with one
  // Path2D per level; only the chunks where a level changed are rebuilt.
  setLevels(levels) {
    const previous = this.levels;
    this.levels = levels;
    this.chunks = this.chunks || [];
    for (let start = 0, c = 0; start < levels.length; start += CHUNK, c++) {
      const end = Math.min(start + CHUNK, levels.length);
      let changed = !this.chunks[c] || previous.length !== levels.length;
      for (let grid = start; !changed && grid < end; grid++) changed = previous[grid] !== levels[grid];
      if (!changed) continue;
      const paths = {};
      for (let grid = start; grid < end; grid++) {
        const level = this.colours[levels[grid]] ? levels[grid] : "green";
        if (!paths[level]) paths[level] = new Path2D();
        this.trace(paths[level], this.rings[grid]);
      }
      this.chunks[c] = paths;
    }
    this.requestDraw();
  }

  select(grid) {
    this.selected = grid;
    this.requestDraw();
  }

  setMarked(grids) {
    this.marked = grids;
    this.requestDraw();
  }

  fit() {
    const [w, h] = this.world;
    const scale = Math.min(this.width / (w || 1), this.height / (h || 1)) * 0.95;
    this.view = { scale, x: (this.width - w * scale) / 2, y: (this.height - h * scale) / 2 };
    this.requestDraw();
  }

  resize() {
    const ratio = window.devicePixelRatio || 1;
    const { clientWidth, clientHeight } = this.container;
    this.width = clientWidth; this.height = clientHeight; this.ratio = ratio;
    this.canvas.width = Math.round(clientWidth * ratio);
    this.canvas.height = Math.round(clientHeight * ratio);
    if (this.rings.length && this.view.scale === 1) this.fit(); else this.requestDraw();
  }

  requestDraw() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => { this.frame = 0; this.draw(); });
  }

  // During a gesture: move the last full drawing as a bitmap now, redraw sharp when the gesture pauses.
  requestMove() {
    if (!this.snapshot) { this.requestDraw(); return; }
    if (!this.moveFrame) {
      this.moveFrame = requestAnimationFrame(() => {
        this.moveFrame = 0;
        const c = this.context, v = this.view, s = this.snapshotView, r = this.ratio;
        const k = v.scale / s.scale;
        c.setTransform(1, 0, 0, 1, 0, 0);
        c.clearRect(0, 0, this.canvas.width, this.canvas.height);
        c.setTransform(k, 0, 0, k, (v.x - s.x * k) * r, (v.y - s.y * k) * r);
        c.drawImage(this.snapshot, 0, 0);
      });
    }
    clearTimeout(this.settle);
    this.settle = setTimeout(() => this.requestDraw(), SETTLE_MS);
  }

  draw() {
    if (!this.world) return; // no shapes yet
    const c = this.context, v = this.view, r = this.ratio;
    c.setTransform(1, 0, 0, 1, 0, 0);
    c.clearRect(0, 0, this.canvas.width, this.canvas.height);
    c.setTransform(v.scale * r, 0, 0, v.scale * r, v.x * r, v.y * r);
    for (const level of Object.keys(this.colours)) { // one fillStyle change per level
      c.fillStyle = this.colours[level];
      for (const chunk of this.chunks || []) if (chunk[level]) c.fill(chunk[level]);
    }
    const pixelsPerGrid = v.scale * Math.sqrt((this.world[0] * this.world[1]) / Math.max(1, this.rings.length));
    if (pixelsPerGrid > 4 && this.borders) { // borders only where grids are big enough to see them
      c.strokeStyle = "rgba(11, 21, 36, 0.8)";
      c.lineWidth = 0.6 / v.scale;
      for (const path of this.borders) c.stroke(path);
    }
    if (this.marked.length) { // open incidents: a dashed light-blue outline, the fill keeps the colour
      const marks = new Path2D();
      for (const grid of this.marked) this.trace(marks, this.rings[grid]);
      c.strokeStyle = "#74c0fc";
      c.lineWidth = 2 / v.scale;
      c.setLineDash([4 / v.scale, 3 / v.scale]);
      c.stroke(marks);
      c.setLineDash([]);
    }
    if (this.selected >= 0) {
      const outline = new Path2D();
      this.trace(outline, this.rings[this.selected]);
      c.strokeStyle = "#ffffff";
      c.lineWidth = 2.5 / v.scale;
      c.stroke(outline);
    }
    this.drawn = (this.drawn || 0) + 1;
    this.keepSnapshot();
  }

  keepSnapshot() {
    if (!this.snapshot || this.snapshot.width !== this.canvas.width || this.snapshot.height !== this.canvas.height) {
      this.snapshot = document.createElement("canvas");
      this.snapshot.width = this.canvas.width;
      this.snapshot.height = this.canvas.height;
    }
    const s = this.snapshot.getContext("2d");
    s.clearRect(0, 0, this.snapshot.width, this.snapshot.height);
    s.drawImage(this.canvas, 0, 0);
    this.snapshotView = { ...this.view };
  }

  // Screen (CSS pixels, relative to the canvas) of a lon/lat, and back.
  toScreen(lon, lat) {
    const [x, y] = this.project(lon, lat);
    return [x * this.view.scale + this.view.x, y * this.view.scale + this.view.y];
  }

  gridAt(sx, sy) {
    if (!this.index) return -1;
    const x = (sx - this.view.x) / this.view.scale, y = (sy - this.view.y) / this.view.scale;
    const { cells, cw, ch, buckets } = this.index;
    const candidates = buckets.get(Math.floor(y / ch) * (cells + 1) + Math.floor(x / cw)) || [];
    for (const grid of candidates) {
      const [x0, y0, x1, y1] = this.boxes[grid];
      if (x < x0 || x > x1 || y < y0 || y > y1) continue;
      if (this.inside(this.rings[grid], x, y)) return grid;
    }
    return -1;
  }

  inside(ring, x, y) {
    let hit = false;
    for (let i = 0, j = ring.length - 2; i < ring.length; j = i, i += 2) {
      const xi = ring[i], yi = ring[i + 1], xj = ring[j], yj = ring[j + 1];
      if ((yi > y) !== (yj > y) && x < ((xj - xi) * (y - yi)) / (yj - yi) + xi) hit = !hit;
    }
    return hit;
  }

  listen() {
    const canvas = this.canvas;
    let drag = null;
    const local = (event) => {
      const box = canvas.getBoundingClientRect();
      return [event.clientX - box.left, event.clientY - box.top];
    };
    canvas.addEventListener("wheel", (event) => {
      event.preventDefault();
      const [sx, sy] = local(event);
      const factor = Math.exp(-event.deltaY * 0.0015);
      const v = this.view;
      v.x = sx - (sx - v.x) * factor; v.y = sy - (sy - v.y) * factor; v.scale *= factor;
      this.requestMove();
    }, { passive: false });
    canvas.addEventListener("mousedown", (event) => { drag = { at: local(event), moved: false }; });
    window.addEventListener("mouseup", (event) => {
      if (drag && !drag.moved && event.target === canvas) {
        const grid = this.gridAt(...local(event));
        if (grid >= 0) this.onClick(grid);
      }
      drag = null;
    });
    canvas.addEventListener("mousemove", (event) => {
      const [sx, sy] = local(event);
      if (drag) {
        const dx = sx - drag.at[0], dy = sy - drag.at[1];
        if (Math.abs(dx) + Math.abs(dy) > 2) drag.moved = true;
        if (drag.moved) {
          this.view.x += dx; this.view.y += dy; drag.at = [sx, sy];
          this.requestMove();
        }
        return;
      }
      this.onHover(this.gridAt(sx, sy), sx, sy);
    });
    canvas.addEventListener("dblclick", () => this.fit());
  }
}

window.GridMap = GridMap;
