/* asyncoro monitor: renders the JSON of /api/... on the Cluster, Jobs, Node and Server pages.
 *
 * Every poll fetches the state the page shows (the Node page only the load
 * samples it does not have yet), so any number of browsers can watch at
 * once. The poll interval and the "show arguments" switch are the server's
 * settings: changing them here changes them for all. When the monitor stops
 * answering (the program ended), the page keeps the last state it got, says
 * so, and asks again only every BACKOFF seconds. Changes (terminate,
 * settings) carry the token of this page. Nothing is fetched from anywhere
 * but this server.
 */
'use strict';

(function () {
  const body = document.body;
  const page = body.dataset.page;
  const tokenMeta = document.querySelector('meta[name="asyncoro-token"]');
  const TOKEN = tokenMeta ? tokenMeta.content : '';
  const BACKOFF = 30;       // seconds between tries once the monitor does not answer
  const POLL_MIN = 1, POLL_MAX = 3600;

  // ------------------------------------------------------------ small helpers

  function $(selector, root) { return (root || document).querySelector(selector); }

  /* el('td', {class: 'num'}, 'text', childNode, ...): a DOM element; strings become text
     nodes (never HTML: arguments and names come from user code). */
  function el(tag, attrs) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === 'text') node.textContent = value;
      else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
      else if (key === 'style') node.style.cssText = value;
      else node.setAttribute(key, value === true ? '' : value);
    }
    for (let i = 2; i < arguments.length; i++) {
      const child = arguments[i];
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS('http://www.w3.org/2000/svg', tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
    return node;
  }

  function count(n) {
    return n ? el('span', {}, n.toLocaleString()) : el('span', {class: 'zero'}, '0');
  }

  function bytes(n) {
    if (n === null || n === undefined) return '\u2014';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
    let i = 0;
    while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? n.toFixed(0) : n.toFixed(n >= 100 ? 0 : 1)) + '\u202f' + units[i];
  }

  function percent(n) {
    return n === null || n === undefined ? '\u2014' : n.toFixed(n >= 10 ? 0 : 1) + '%';
  }

  function clock(t) {
    if (!t) return '\u2014';
    return new Date(t * 1000).toLocaleTimeString([], {hour12: false});
  }

  function hhmm(t) {
    return new Date(t * 1000).toLocaleTimeString([], {hour12: false, hour: '2-digit', minute: '2-digit'});
  }

  function when(t) {
    if (!t) return '\u2014';
    const d = new Date(t * 1000);
    const today = new Date();
    const time = d.toLocaleTimeString([], {hour12: false});
    return d.toDateString() === today.toDateString() ? time :
      d.toLocaleDateString([], {month: 'short', day: 'numeric'}) + ' ' + time;
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined || isNaN(seconds)) return '\u2014';
    if (seconds < 10 && seconds > 0 && !Number.isInteger(seconds)) return seconds.toFixed(seconds < 1 ? 2 : 1) + ' s';
    seconds = Math.max(0, Math.round(seconds));
    if (seconds < 60) return seconds + ' s';
    const m = Math.floor(seconds / 60), s = seconds % 60;
    if (m < 60) return m + ' min' + (s ? ' ' + s + ' s' : '');
    const h = Math.floor(m / 60);
    return h + ' h' + (m % 60 ? ' ' + (m % 60) + ' min' : '');
  }

  function ago(seconds) {
    return seconds === null || seconds === undefined ? '\u2014' : duration(seconds) + ' ago';
  }

  const STATE_WORDS = {starting: 'Starting', up: 'Up', closed: 'Closed', lost: 'Lost',
                       running: 'Running', finished: 'Finished', failed: 'Failed',
                       terminated: 'Terminated'};

  function stateWord(state) { return STATE_WORDS[state] || state || 'Unknown'; }

  function pill(state, title) {
    return el('span', {class: 'pill s-' + String(state || 'unknown').toLowerCase(), title: title},
              stateWord(state));
  }

  function setPill(node, state) {
    node.className = 'pill s-' + String(state || 'unknown').toLowerCase();
    node.textContent = state ? stateWord(state) : '';
  }

  function card(label, value, color, note, id) {
    return el('div', {class: 'card', style: color ? '--c:' + color : null, 'data-card': id || label.toLowerCase()},
      el('div', {class: 'label'}, label),
      el('div', {class: 'value'}, typeof value === 'number' ? value.toLocaleString() : value),
      note ? el('div', {class: 'note'}, note) : null);
  }

  function meter(value, text) {
    if (value === null || value === undefined) return el('span', {class: 'dim'}, '\u2014');
    const level = value < 10 ? ' crit' : value < 30 ? ' low' : '';
    return el('span', {class: 'meter' + level},
      el('i', {}, el('b', {style: 'width:' + Math.max(2, Math.min(100, value)) + '%'})), text);
  }

  function nodeHref(addr) { return '/node/' + encodeURIComponent(addr); }
  function serverHref(location) { return '/server/' + encodeURIComponent(location); }

  function fill(tbody, rows) {
    tbody.replaceChildren.apply(tbody, rows);
    labelCells(tbody.closest('table'));
  }

  /* Each cell gets its column's name (data-label): on a phone a row shows as a card of
     "label value" lines instead of a table that scrolls sideways. */
  function labelCells(table) {
    if (!table || !table.tHead) return;
    const names = Array.from(table.tHead.rows[0].cells).map(function (th) { return th.textContent.trim(); });
    Array.from(table.tBodies[0].rows).forEach(function (tr) {
      Array.from(tr.cells).forEach(function (td, i) {
        if (names[i] && !td.hasAttribute('data-label')) td.setAttribute('data-label', names[i]);
      });
    });
  }

  // ------------------------------------------------------------ talking to the server

  class RequestError extends Error {
    constructor(message, status) { super(message); this.status = status; }
  }

  async function request(method, url, data) {
    const options = {method: method, cache: 'no-store', credentials: 'same-origin',
                     headers: {Accept: 'application/json'}};
    if (method !== 'GET') options.headers['X-Asyncoro-Token'] = TOKEN;
    if (data !== undefined) {
      options.headers['Content-Type'] = 'application/json';
      options.body = JSON.stringify(data);
    }
    let response;
    try {
      response = await fetch(url, options);
    } catch (err) {
      throw new RequestError('the monitor does not answer', 0);
    }
    let payload = null;
    try { payload = await response.json(); } catch (err) { payload = null; }
    if (!response.ok) {
      throw new RequestError((payload && payload.error) || response.status + ' ' + response.statusText,
                             response.status);
    }
    return payload;
  }

  // ------------------------------------------------------------ header, settings, polling

  const settings = {poll_sec: 10, show_coro_args: true};
  let timer = null;
  let refresh = function () {};
  let lastGood = null;          // when the last poll was answered (seconds)
  let lastData = null;          // what it answered

  function remember(kind, value) {
    try { localStorage.setItem('asyncoro-monitor-' + kind, value); } catch (err) { /* private mode */ }
  }

  function recall(kind) {
    try { return localStorage.getItem('asyncoro-monitor-' + kind); } catch (err) { return null; }
  }

  function buildHeader() {
    const top = $('#topbar');
    if (!top) return;
    const node = page === 'cluster' || page === 'jobs' ? recall('node') : body.dataset.node || recall('node');
    const server = page === 'server' ? body.dataset.server : recall('server');
    const tab = function (name, href, detail) {
      const cls = page === name.toLowerCase() ? 'active' : null;
      if (!href) return el('span', {title: 'Choose one on the Cluster page first'}, name);
      return el('a', {href: href, class: cls, id: 'tab-' + name.toLowerCase()}, name,
        detail ? el('small', {}, detail) : null);
    };
    const poll = el('input', {type: 'number', id: 'poll-sec', min: POLL_MIN, max: POLL_MAX, step: 1,
      value: settings.poll_sec, inputmode: 'numeric', 'aria-label': 'Refresh interval in seconds',
      'aria-describedby': 'poll-error'});
    const args = el('input', {type: 'checkbox', id: 'show-args'});
    top.append(
      el('a', {class: 'brand', href: '/'}, el('img', {src: '/static/favicon.svg', alt: ''}),
         'asyncoro', el('span', {}, 'monitor')),
      el('nav', {class: 'tabs', 'aria-label': 'Pages'},
         tab('Cluster', '/'),
         tab('Jobs', '/jobs'),
         tab('Node', node ? nodeHref(node) : null, node),
         tab('Server', server ? serverHref(server) : null,
             server && page !== 'cluster' ? server.split(':').pop() : null)),
      el('div', {class: 'controls'},
         el('label', {title: 'How often every open page refreshes'}, 'Every', poll, 's'),
         el('label', {title: 'Show coroutine arguments'}, args, 'Arguments')),
      el('span', {class: 'live', id: 'live'}, 'connecting\u2026'),
      el('p', {class: 'poll-error', id: 'poll-error', role: 'alert', hidden: true}));
    poll.addEventListener('change', function () { changePoll(poll); });
    poll.addEventListener('keydown', function (e) {
      if (e.key === 'Escape') { poll.value = settings.poll_sec; pollError(null); poll.blur(); }
    });
    args.addEventListener('change', function () { change({show_coro_args: args.checked}); });
  }

  /* The error of a bad interval stays, with the bad value, until it is corrected or
     given up (Escape): a poll does not hide it. */
  function pollError(message) {
    const box = $('#poll-sec'), note = $('#poll-error');
    if (!box || !note) return;
    box.classList.toggle('invalid', Boolean(message));
    if (message) box.setAttribute('aria-invalid', 'true'); else box.removeAttribute('aria-invalid');
    note.hidden = !message;
    note.textContent = message ? message + ' (Esc puts back ' + settings.poll_sec + ' s)' : '';
  }

  function changePoll(box) {
    const value = Number(box.value);
    if (box.value.trim() === '' || !isFinite(value) || value < POLL_MIN || value > POLL_MAX) {
      pollError('The refresh interval must be between ' + POLL_MIN + ' and ' + POLL_MAX +
                ' seconds, not \u201c' + box.value + '\u201d');
      return;
    }
    change({poll_sec: value});
  }

  async function change(update) {
    try {
      applySettings(await request('POST', '/api/settings', update));
      pollError(null);
      refresh();
    } catch (err) {
      if (update.poll_sec !== undefined) pollError('Not changed: ' + err.message);
      else {
        applySettings(settings);
        live(false, 'Not changed: ' + err.message);
      }
    }
  }

  function applySettings(data) {
    if (!data) return;
    if (typeof data.poll_sec === 'number') settings.poll_sec = data.poll_sec;
    if (typeof data.show_coro_args === 'boolean') settings.show_coro_args = data.show_coro_args;
    const poll = $('#poll-sec'), args = $('#show-args');
    if (poll && document.activeElement !== poll && !poll.classList.contains('invalid')) {
      poll.value = settings.poll_sec;
    }
    if (args) args.checked = settings.show_coro_args;
  }

  function live(ok, text, retry) {
    const node = $('#live');
    if (!node) return;
    node.className = 'live ' + (ok ? 'ok' : 'bad');
    node.textContent = ok ? 'Updated ' + clock(Date.now() / 1000) : text;
    node.title = ok ? 'Refreshes every ' + settings.poll_sec + ' s' : text;
    node.dataset.retry = String(retry);
  }

  /* Call load() now and every poll interval; load returns the JSON it rendered. Once the
     monitor stops answering, the page keeps what it shows and asks every BACKOFF s. */
  function poll(load) {
    let failures = 0;
    async function tick() {
      clearTimeout(timer);
      let delay;
      try {
        const data = await load();
        applySettings(data);        // the interval may have changed: it is read after
        delay = settings.poll_sec;
        lastData = data || lastData;
        lastGood = Date.now() / 1000;
        failures = 0;
        offline(null);
        live(true, null, delay);
      } catch (err) {
        delay = settings.poll_sec;
        if (err.status === 404) {
          live(false, 'Not known any more', delay);
          gone(err.message);
        } else if (err.status) {
          live(false, err.message, delay);
        } else {
          failures += 1;
          delay = failures > 1 ? Math.max(BACKOFF, settings.poll_sec) : settings.poll_sec;
          live(false, 'Offline \u2014 next try in ' + delay + ' s', delay);
          offline(delay);
        }
      }
      timer = setTimeout(tick, delay * 1000);
    }
    refresh = tick;
    tick();
  }

  /* The program has (probably) ended: say so over the last state, which stays. */
  function offline(delay) {
    const banner = $('#gone');
    if (!banner) return;
    if (delay === null) {
      if (banner.dataset.kind === 'offline') { banner.hidden = true; banner.dataset.kind = ''; }
      return;
    }
    const comp = lastData && lastData.computation;
    banner.hidden = false;
    banner.dataset.kind = 'offline';
    banner.className = 'banner warn';
    banner.replaceChildren(
      el('b', {}, 'The monitor does not answer'),
      lastGood ? ' since ' + clock(lastGood) : '',
      ' \u2014 its program has probably ended. ',
      comp && comp.status === 'closed' ? 'The computation closed at ' + clock(comp.closed) + '; this is its final state. '
                                       : 'This is the last state it reported. ',
      'Checking again every ' + delay + ' s.');
  }

  function gone(message) {
    const banner = $('#gone');
    if (!banner) return;
    banner.hidden = false;
    banner.dataset.kind = 'gone';
    banner.replaceChildren(message + ' \u2014 it may belong to a computation that ended. ',
                           el('a', {href: '/'}, 'Back to the cluster'));
  }

  function ungone() {
    const banner = $('#gone');
    if (banner && banner.dataset.kind === 'gone') banner.hidden = true;
  }

  /* A banner for a node or server that is no longer up. */
  function downBanner(data, what) {
    const banner = $('#down');
    if (!banner) return;
    const down = data.state === 'closed' || data.state === 'lost';
    banner.hidden = !down;
    if (!down) return;
    banner.className = 'banner ' + (data.state === 'lost' ? 'bad' : 'warn');
    banner.replaceChildren(
      el('b', {}, what + (data.state === 'lost' ? ' lost' : ' closed')),
      data.down_time ? ' ' + ago(data.time - data.down_time) + ' (' + clock(data.down_time) + ')' : '',
      data.cause ? ': ' + data.cause : '', '. ',
      data.last_report ? 'The figures below are its last report, ' + ago(data.time - data.last_report) + '.' : '');
  }

  // ------------------------------------------------------------ arguments, one line each

  const opened = new Set();     // jobs whose arguments (or traceback) the reader opened

  function argsText(job) {
    return [job.args, job.kwargs].filter(Boolean).join(', ');
  }

  /* The arguments on one line; "more" shows them whole (and a failure's traceback),
     fetching the full text when the list had it shortened. */
  function argsCell(job, showArgs, cls) {
    const td = el('td', {class: 'args ' + (cls || '')});
    if (!showArgs) {
      td.classList.add('dim');
      td.title = 'Turn on \u201cArguments\u201d to see them';
      td.textContent = 'hidden';
      return td;
    }
    const text = argsText(job);
    const line = el('div', {class: 'oneline', title: text}, text || el('span', {class: 'dim'}, 'none'));
    td.append(line);
    const long = job.cut || text.length > 48 || job.has_detail;
    if (!long) return td;
    const button = el('button', {type: 'button', class: 'more-btn', 'aria-expanded': 'false'}, 'more');
    td.append(button);
    const open = async function () {
      td.classList.add('open');
      button.textContent = 'less';
      button.setAttribute('aria-expanded', 'true');
      if (job.cut || job.has_detail) {
        try {
          const full = await request('GET', '/api/job?coro=' + encodeURIComponent(job.coro));
          line.textContent = argsText(full) || 'none';
          if (full.detail && !td.querySelector('.detail')) td.append(el('pre', {class: 'detail'}, full.detail));
        } catch (err) {
          line.title = 'Could not fetch the whole text: ' + err.message;
        }
      }
    };
    button.addEventListener('click', function () {
      if (td.classList.contains('open')) {
        opened.delete(job.coro);
        td.classList.remove('open');
        button.textContent = 'more';
        button.setAttribute('aria-expanded', 'false');
        line.textContent = text;
        const detail = td.querySelector('.detail');
        if (detail) detail.remove();
      } else {
        opened.add(job.coro);
        open();
      }
    });
    if (opened.has(job.coro)) open();
    return td;
  }

  function outcome(job) {
    const cell = el('td', {class: 'outcome'}, pill(job.state));
    if (job.error) cell.append(el('div', {class: 'error-text'}, job.error));
    return cell;
  }

  // ------------------------------------------------------------ sortable tables

  function ipKey(text) {
    const parts = String(text).split('.');
    if (parts.length === 4 && parts.every(function (p) { return /^\d+$/.test(p); })) {
      return parts.map(function (p) { return p.padStart(3, '0'); }).join('.');
    }
    return String(text);
  }

  function locationKey(text) {
    const i = String(text).lastIndexOf(':');
    return ipKey(String(text).slice(0, i)) + ':' + String(text).slice(i + 1).padStart(5, '0');
  }

  /* Click a header to sort by it, again to reverse; remembered per table. The function
     returned sorts rows here; its state() is the choice, for a list the server sorts. */
  function sorter(table, name, initial, onChange) {
    let sort = initial;
    try { sort = JSON.parse(recall('sort-' + name)) || initial; } catch (err) { sort = initial; }
    const heads = table.querySelectorAll('th[data-key]');
    if (!table.querySelector('th[data-key="' + sort.key + '"]')) sort = initial;
    function mark() {
      heads.forEach(function (th) {
        if (th.dataset.key === sort.key) th.setAttribute('aria-sort', sort.dir > 0 ? 'ascending' : 'descending');
        else th.removeAttribute('aria-sort');
      });
    }
    heads.forEach(function (th) {
      th.tabIndex = 0;
      const pick = function () {
        if (sort.key === th.dataset.key) sort = {key: sort.key, dir: -sort.dir};
        else sort = {key: th.dataset.key, dir: th.dataset.type ? 1 : -1};
        remember('sort-' + name, JSON.stringify(sort));
        mark();
        onChange();
      };
      th.addEventListener('click', pick);
      th.addEventListener('keydown', function (e) { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); pick(); } });
    });
    mark();
    const sortRows = function (rows, value, tieKey) {
      const th = table.querySelector('th[data-key="' + sort.key + '"]');
      const type = th ? th.dataset.type : null;
      const key = function (row, k, t) {
        const v = value(row, k);
        if (t === 'ip') return ipKey(v);
        if (t === 'location') return locationKey(v);
        return v;
      };
      return rows.slice().sort(function (a, b) {
        let x = key(a, sort.key, type), y = key(b, sort.key, type);
        if (x === null || x === undefined) x = type ? '' : -Infinity;
        if (y === null || y === undefined) y = type ? '' : -Infinity;
        let c = typeof x === 'string' ? x.localeCompare(y) : x - y;
        if (c === 0 && tieKey) c = String(key(a, tieKey, 'ip')).localeCompare(String(key(b, tieKey, 'ip')));
        return c * sort.dir;
      });
    };
    sortRows.state = function () { return sort; };   // for a list the server sorts
    return sortRows;
  }

  // ------------------------------------------------------------ charts

  /* A time step for about `ticks` labels over `span` seconds. */
  function timeStep(span, ticks) {
    const steps = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];
    for (const step of steps) if (span / step <= ticks) return step;
    return steps[steps.length - 1];
  }

  function timeAxis(chart, t0, t1, x, bottom, ticks) {
    const span = Math.max(t1 - t0, 1);
    const step = timeStep(span, ticks);
    const format = step < 60 ? clock : hhmm;
    for (let t = Math.ceil(t0 / step) * step; t <= t1 + 1e-6; t += step) {
      const px = x(t);
      chart.append(svg('line', {class: 'tick', x1: px, x2: px, y1: bottom, y2: bottom + 4}));
      const edge = px < 24 ? 'start' : px > x(t1) - 24 ? 'end' : 'middle';
      const label = svg('text', {class: 'axis', x: px, y: bottom + 15, 'text-anchor': edge});
      label.textContent = format(t);
      chart.append(label);
    }
  }

  /* The hover read-out of a chart: a rule, and a note with the values of the nearest
     point (pointer or touch). `pick(px)` returns {x, y, lines} or null. */
  function hover(box, chart, height, pick) {
    const rule = svg('line', {class: 'rule', y1: 0, y2: height, visibility: 'hidden'});
    const dot = svg('circle', {class: 'dot', r: 3.5, visibility: 'hidden'});
    chart.append(rule, dot);
    const tip = el('div', {class: 'tip', hidden: true});
    box.append(tip);
    function show(event) {
      const rect = chart.getBoundingClientRect();
      const found = pick(event.clientX - rect.left);
      if (!found) { hide(); return; }
      rule.setAttribute('x1', found.x);
      rule.setAttribute('x2', found.x);
      rule.setAttribute('visibility', 'visible');
      if (found.y !== undefined) {
        dot.setAttribute('cx', found.x);
        dot.setAttribute('cy', found.y);
        dot.setAttribute('visibility', 'visible');
      }
      tip.replaceChildren.apply(tip, found.lines.map(function (line, i) { return el('div', {class: i ? '' : 'when'}, line); }));
      tip.hidden = false;
      const left = Math.min(Math.max(found.x + 10, 0), Math.max(rect.width - tip.offsetWidth, 0));
      tip.style.left = (found.x + 10 + tip.offsetWidth > rect.width ? found.x - tip.offsetWidth - 10 : left) + 'px';
    }
    function hide() {
      rule.setAttribute('visibility', 'hidden');
      dot.setAttribute('visibility', 'hidden');
      tip.hidden = true;
    }
    chart.addEventListener('pointermove', show);
    chart.addEventListener('pointerdown', show);
    chart.addEventListener('pointerleave', hide);
  }

  const CHARTS = [
    {label: 'CPU idle', index: 1, color: '#2f6fed', max: 100, format: percent},
    {label: 'Memory free', index: 2, color: '#16875a', format: bytes},
    {label: 'Disk free', index: 3, color: '#7a5af8', format: bytes},
    {label: 'Swap free', index: 4, color: '#e08a1e', max: 100, format: percent}];

  /* One load chart: the line over time with a time axis and the value under the pointer. */
  function loadChart(tile, spec, history, stale) {
    const points = history.filter(function (s) { return s[spec.index] !== null && s[spec.index] !== undefined; })
                          .map(function (s) { return [s[0], s[spec.index]]; });
    const current = points.length ? points[points.length - 1][1] : null;
    tile.replaceChildren(el('div', {class: 'top'}, el('span', {class: 'label'}, spec.label),
      el('span', {class: 'value' + (stale ? ' stale' : ''), title: stale ? 'last reported value' : null}, spec.format(current))));
    if (!points.length) {
      tile.append(el('div', {class: 'none'}, 'not reported by this node'));
      return;
    }
    const W = Math.max(tile.clientWidth - 36, 160), H = 90, BOTTOM = H - 20;
    const values = points.map(function (p) { return p[1]; });
    const low = Math.min.apply(null, values), high = Math.max.apply(null, values);
    const top = spec.max || (high > 0 ? high * 1.15 : 1);
    const t0 = points[0][0], t1 = points[points.length - 1][0];
    const span = t1 - t0;
    const x = function (t) { return span > 0 ? (t - t0) / span * W : W; };
    const y = function (v) { return BOTTOM - Math.max(0, Math.min(1, v / top)) * (BOTTOM - 16); };
    const chart = svg('svg', {width: W, height: H, viewBox: '0 0 ' + W + ' ' + H, role: 'img',
                              'aria-label': spec.label + ' over time'});
    [0.5, 1].forEach(function (f) {
      chart.append(svg('line', {class: 'grid-line', x1: 0, x2: W, y1: y(top * f), y2: y(top * f)}));
    });
    const topLabel = svg('text', {class: 'axis', x: 2, y: y(top) - 4});
    topLabel.textContent = spec.format(top);
    chart.append(topLabel);
    chart.append(svg('line', {class: 'baseline', x1: 0, x2: W, y1: BOTTOM, y2: BOTTOM}));
    let line;
    if (points.length === 1) {
      line = 'M0,' + y(values[0]) + ' L' + W + ',' + y(values[0]);
    } else {
      line = points.map(function (p, i) { return (i ? 'L' : 'M') + x(p[0]).toFixed(1) + ',' + y(p[1]).toFixed(1); }).join(' ');
    }
    const startX = points.length === 1 ? 0 : x(t0);
    chart.append(svg('path', {class: 'area', d: line + ' L' + W + ',' + BOTTOM + ' L' + startX + ',' + BOTTOM + ' Z'}));
    chart.append(svg('path', {class: 'line', d: line}));
    if (span > 0) timeAxis(chart, t0, t1, x, BOTTOM, Math.max(2, Math.floor(W / 90)));
    const box = el('div', {class: 'plot'}, chart);
    tile.append(box);
    hover(box, chart, BOTTOM, function (px) {
      let best = null;
      for (const p of points) {
        if (best === null || Math.abs(x(p[0]) - px) < Math.abs(x(best[0]) - px)) best = p;
      }
      return best && {x: x(best[0]), y: y(best[1]), lines: [clock(best[0]), spec.format(best[1])]};
    });
    tile.append(el('div', {class: 'foot'},
      el('span', {}, span >= 1 ? 'last ' + duration(span) : 'one report'),
      el('span', {title: 'lowest and highest'}, low === high ? spec.format(low) : spec.format(low) + ' \u2013 ' + spec.format(high))));
  }

  const ENDS = [{key: 'finished', color: '#16875a', label: 'finished'},
                {key: 'failed', color: '#c23b3b', label: 'failed'},
                {key: 'terminated', color: '#e49b2c', label: 'terminated'},
                {key: 'lost', color: '#5d6778', label: 'lost'}];

  /* Jobs started (line) and ended (stacked bars by how) per interval. */
  function throughputChart(box, data, now) {
    box.replaceChildren();
    const started = data.started || [];
    const n = started.length;
    if (!n || data.start === null || data.start === undefined) {
      box.append(el('div', {class: 'none'}, 'No job has started yet.'));
      return;
    }
    const width = data.width;
    const bars = Math.max(n, Math.min(Math.floor((now - data.start) / width) + 1, 120));
    const W = Math.max(box.clientWidth - 36, 200), H = 150, BOTTOM = H - 20;
    const total = function (i) { return ENDS.reduce(function (s, e) { return s + ((data[e.key] || [])[i] || 0); }, 0); };
    let high = 1;
    for (let i = 0; i < n; i++) high = Math.max(high, started[i], total(i));
    const bw = Math.min(W / bars, 24);     // early on, narrow bars from the left
    const y = function (v) { return BOTTOM - v / high * (BOTTOM - 14); };
    const chart = svg('svg', {width: W, height: H, viewBox: '0 0 ' + W + ' ' + H, role: 'img',
                              'aria-label': 'Jobs started and ended per ' + duration(width)});
    chart.append(svg('line', {class: 'grid-line', x1: 0, x2: W, y1: y(high), y2: y(high)}));
    const topLabel = svg('text', {class: 'axis', x: 2, y: y(high) - 3});
    topLabel.textContent = high + ' per ' + duration(width);
    chart.append(topLabel);
    for (let i = 0; i < n; i++) {
      let base = 0;
      ENDS.forEach(function (end) {
        const v = (data[end.key] || [])[i] || 0;
        if (!v) return;
        chart.append(svg('rect', {x: i * bw + bw * 0.12, width: Math.max(bw * 0.76, 1), y: y(base + v),
                                  height: y(base) - y(base + v), fill: end.color, class: 'bar'}));
        base += v;
      });
    }
    const line = started.map(function (v, i) { return (i ? 'L' : 'M') + ((i + 0.5) * bw).toFixed(1) + ',' + y(v).toFixed(1); }).join(' ');
    chart.append(svg('path', {class: 'started', d: line}));
    if (n <= 40) {
      started.forEach(function (v, i) { chart.append(svg('circle', {class: 'started-dot', cx: (i + 0.5) * bw, cy: y(v), r: 2.5})); });
    }
    chart.append(svg('line', {class: 'baseline', x1: 0, x2: W, y1: BOTTOM, y2: BOTTOM}));
    const t0 = data.start, t1 = data.start + bars * width, used = bars * bw;
    timeAxis(chart, t0, t1, function (t) { return (t - t0) / (t1 - t0) * used; }, BOTTOM, Math.max(2, Math.floor(used / 100)));
    const plot = el('div', {class: 'plot'}, chart);
    box.append(plot);
    hover(plot, chart, BOTTOM, function (px) {
      const i = Math.floor(px / bw);
      if (i < 0 || i >= bars) return null;
      const at = function (key) { return (data[key] || [])[i] || 0; };
      const from = t0 + i * width;
      return {x: (i + 0.5) * bw, lines: [clock(from) + ' \u2013 ' + clock(from + width),
        'started ' + at('started')].concat(ENDS.map(function (e) { return e.label + ' ' + at(e.key); }))};
    });
    box.append(el('div', {class: 'legend'},
      el('span', {class: 'key started-key'}, 'started'),
      ...ENDS.map(function (e) { return el('span', {class: 'key', style: '--c:' + e.color}, e.label); })));
  }

  // ------------------------------------------------------------ Cluster page

  const PAGE = 100, PAGES = [25, 50, 100, 200];     // nodes a page: the server's default, the choices

  /* The Cluster page asks for one page of nodes (sorted, and filtered by name or address, by
     the server) and the cluster's totals: what it fetches does not grow with the cluster. The
     search and the page are in the page's address; the sort and the page size are remembered. */
  function clusterPage() {
    const table = $('#nodes-table');
    const search = $('#node-search'), pager = $('#nodes-pager'), sizes = $('#nodes-limit');
    const params = new URLSearchParams(location.search);
    const view = {q: (params.get('q') || '').trim(), page: Math.max((parseInt(params.get('page'), 10) || 1) - 1, 0),
                  limit: Number(recall('nodes-limit'))};
    if (!PAGES.includes(view.limit)) view.limit = PAGE;
    search.value = view.q;
    sizes.value = String(view.limit);
    const empty = $('#nodes-empty'), emptyText = empty.innerHTML;
    let last = null, asked = 0;
    const sorted = sorter(table, 'nodes', {key: 'addr', dir: 1}, function () { view.page = 0; again(); });

    /* Ask now for what the reader chose; the address keeps it for a reload. */
    function again() {
      const query = new URLSearchParams();
      if (view.q) query.set('q', view.q);
      if (view.page) query.set('page', view.page + 1);
      history.replaceState(null, '', location.pathname + (query.toString() ? '?' + query : ''));
      refresh();
    }

    function url() {
      const sort = sorted.state();
      const query = new URLSearchParams({sort: sort.key, order: sort.dir > 0 ? 'asc' : 'desc',
                                         offset: view.page * view.limit, limit: view.limit});
      if (view.q) query.set('q', view.q);
      return '/api/cluster?' + query;
    }

    let typing = null;
    search.addEventListener('input', function () {
      clearTimeout(typing);
      typing = setTimeout(function () {
        if (search.value.trim() === view.q) return;
        view.q = search.value.trim();
        view.page = 0;
        again();
      }, 250);
    });
    /* Another page: its first rows in sight. */
    function turn(by) {
      view.page = Math.max(view.page + by, 0);
      const panel = $('#nodes-panel');
      if (panel.getBoundingClientRect().top < 0) panel.scrollIntoView({block: 'start'});
      again();
    }
    $('#nodes-prev').addEventListener('click', function () { turn(-1); });
    $('#nodes-next').addEventListener('click', function () { turn(1); });
    sizes.addEventListener('change', function () {
      view.limit = Number(sizes.value);
      remember('nodes-limit', view.limit);
      view.page = 0;
      again();
    });

    /* The pager and the search show once there is more than a page (or a search, or a page
       size of the reader's own): a small cluster looks as it always did. */
    function drawPager(data) {
      const page = data.page, shown = data.nodes.length;
      const big = page.total > page.limit || page.limit !== PAGE || page.offset > 0 || Boolean(view.q);
      search.hidden = pager.hidden = !big;
      $('#nodes-prev').disabled = page.offset === 0;
      $('#nodes-next').disabled = page.offset + shown >= page.matched;
      const of = page.matched.toLocaleString() + (view.q ? ' matching \u201c' + view.q + '\u201d' : '') +
        (page.matched !== page.total ? ' (of ' + page.total.toLocaleString() + ')' : '');
      const range = $('#nodes-range');
      if (shown) {
        range.textContent = 'Nodes ' + (page.offset + 1).toLocaleString() + '\u2013' +
          (page.offset + shown).toLocaleString() + ' of ' + of;
      } else if (page.matched) {
        range.textContent = 'No node on this page';
      } else {
        range.textContent = 'No node of ' + page.total.toLocaleString() +
          (view.q ? ' matches \u201c' + view.q + '\u201d' : '');
      }
      if (!shown && page.matched && page.offset >= page.matched) {
        // past the end (nodes went, or the search narrowed): the last page
        view.page = Math.max(Math.ceil(page.matched / view.limit) - 1, 0);
        setTimeout(again, 0);
      }
    }

    function render(data) {
      last = data;
      const comp = data.computation;
      const sub = $('#computation');
      sub.replaceChildren();
      if (data.mode === 'scheduler') {
        sub.append(data.scheduler ? el('span', {}, 'Scheduler ', el('b', {class: 'mono'}, data.scheduler))
                                  : el('span', {}, 'Looking for the discoro scheduler\u2026'),
                   el('span', {class: 'sep'}, '\u00b7'));
      }
      if (comp) {
        sub.append('Computation ', el('b', {class: 'mono'}, String(comp.id)));
        if (comp.client) sub.append(el('span', {class: 'sep'}, '\u00b7'), 'client ', el('b', {class: 'mono'}, comp.client));
        sub.append(el('span', {class: 'sep'}, '\u00b7'), pill(comp.status === 'closed' ? 'closed' : 'running'));
        if (comp.since) sub.append(el('span', {class: 'sep'}, '\u00b7'), 'since ' + when(comp.since));
        if (comp.closed) sub.append(el('span', {class: 'sep'}, '\u00b7'), 'closed ' + when(comp.closed));
      } else {
        sub.append('No computation is running.');
      }
      const jobs = data.jobs || {};
      const states = data.node_counts, total = data.page.total;
      const up = states.up, lostNodes = states.lost;
      fill($('#cards'), [
        card('Running', jobs.running || 0, '#e49b2c', 'right now'),
        card('Waiting', data.jobs_waiting || 0, '#b07cc6', 'for a server'),
        card('Finished', jobs.finished || 0, '#16875a', 'normally'),
        card('Failed', jobs.failed || 0, '#c23b3b', 'with an exception'),
        card('Lost', jobs.lost || 0, '#5d6778', 'with their server'),
        card('Terminated', jobs.terminated || 0, '#a86200', 'from the monitor'),
        card('Submitted', data.coros_submitted, '#5b8def', 'in all'),
        card('Nodes', up, '#7a5af8', lostNodes ? lostNodes + ' lost' : total > up ? (total - up) + ' closed or starting' : 'up'),
        card('Servers', data.servers, '#0e9aa7', 'up')]);
      throughputChart($('#throughput'), data.throughput || {}, data.time);
      const rows = data.nodes.map(function (node) {
        const avail = node.avail_info || {};
        const old = node.state !== 'up' || node.stale;
        return el('tr', {'data-node': node.addr, class: old ? 'old' : null},
          el('td', {class: 'node-cell lead'}, el('a', {href: nodeHref(node.addr)}, node.addr),
             node.name && node.name !== node.addr ? el('span', {class: 'name'}, node.name) : null),
          el('td', {}, pill(node.state, node.cause)),
          el('td', {class: 'num'}, count(node.servers)),
          el('td', {class: 'num strong'}, count(node.coros_running)),
          el('td', {class: 'num'}, count(node.coros_finished)),
          el('td', {class: 'num' + (node.coros_failed ? ' bad' : '')}, count(node.coros_failed)),
          el('td', {class: 'num'}, count(node.coros_lost)),
          el('td', {class: 'num'}, meter(avail.cpu, percent(avail.cpu))),
          el('td', {class: 'num'}, avail.memory === undefined ? el('span', {class: 'dim'}, '\u2014') : bytes(avail.memory)),
          el('td', {class: 'num' + (old ? ' stale' : ''), title: node.stale ? 'no report for ' + duration(node.report_age) + '; it reports every ' + duration(node.pulse_interval) : null},
             node.last_report ? ago(node.report_age) : '\u2014'));
      });
      fill(table.tBodies[0], rows);
      empty.hidden = rows.length > 0 || data.page.matched > 0;
      if (view.q) empty.textContent = 'No node\u2019s name or address contains \u201c' + view.q + '\u201d.';
      else empty.innerHTML = emptyText;
      drawPager(data);
      const failures = data.failures || [];
      $('#failures-panel').hidden = failures.length === 0;
      $('#failures').replaceChildren.apply($('#failures'), failures.map(function (job) {
        return el('li', {'data-coro': job.coro},
          el('div', {class: 'line'}, pill(job.state), el('b', {}, job.name), el('span', {class: 'mono dim'}, job.coro),
             el('span', {class: 'dim when'}, clock(job.end_time))),
          el('div', {class: 'error-text'}, job.error || ''));
      }));
      const queue = data.queue || [];
      $('#queue-panel').hidden = data.mode !== 'scheduler' || queue.length === 0;
      fill($('#queue-table').tBodies[0], queue.map(function (entry, i) {
        return el('tr', {}, el('td', {}, i + 1), el('td', {class: 'mono'}, String(entry.id)),
                  el('td', {class: 'mono'}, entry.client));
      }));
      return data;
    }

    poll(async function () {
      const mine = ++asked;
      const data = await request('GET', url());
      // an answer to an older question (the reader changed the page meanwhile): the newer one draws
      return mine === asked ? render(data) : last;
    });
  }

  // ------------------------------------------------------------ Jobs page

  function jobsPage() {
    const params = new URLSearchParams(location.search);
    const box = $('#search');
    box.value = params.get('q') || '';
    const chosen = new Set(params.getAll('state').join(',').split(',').filter(Boolean));
    const chips = $('#states');
    const all = ['running', 'finished', 'failed', 'terminated', 'lost'];
    let last = null;

    function url() {
      const query = new URLSearchParams();
      if (box.value.trim()) query.set('q', box.value.trim());
      if (chosen.size) query.set('state', Array.from(chosen).join(','));
      return query;
    }

    function drawChips(counts) {
      const chip = function (state, label, n) {
        const on = state ? chosen.has(state) : chosen.size === 0;
        return el('button', {type: 'button', class: 'chip' + (on ? ' on' : '') + (state ? ' s-' + state : ''),
                             'aria-pressed': on ? 'true' : 'false', 'data-state': state || 'all',
                             onclick: function () {
                               if (!state) chosen.clear();
                               else if (chosen.has(state)) chosen.delete(state);
                               else chosen.add(state);
                               history.replaceState(null, '', '/jobs' + (url().toString() ? '?' + url() : ''));
                               refresh();
                             }},
                  label, n === undefined ? null : el('span', {class: 'n'}, n.toLocaleString()));
      };
      const total = counts ? all.reduce(function (s, k) { return s + counts[k]; }, 0) : undefined;
      chips.replaceChildren(chip(null, 'All', total), ...all.map(function (s) { return chip(s, stateWord(s), counts ? counts[s] : undefined); }));
    }
    drawChips(null);

    let typing = null;
    box.addEventListener('input', function () {
      clearTimeout(typing);
      typing = setTimeout(function () {
        history.replaceState(null, '', '/jobs' + (url().toString() ? '?' + url() : ''));
        refresh();
      }, 250);
    });

    function render(data) {
      last = data;
      drawChips(data.counts);
      const now = data.time;
      fill($('#jobs-table').tBodies[0], data.jobs.map(function (job) {
        return el('tr', {'data-coro': job.coro, class: 'j-' + job.state},
          el('td', {class: 'coro lead'}, job.coro),
          el('td', {class: 'strong'}, job.name),
          argsCell(job, data.show_coro_args),
          el('td', {}, el('a', {href: serverHref(job.server), class: 'mono'}, job.server)),
          el('td', {}, when(job.start_time)),
          el('td', {class: 'num'}, duration((job.end_time || now) - job.start_time)),
          outcome(job));
      }));
      $('#jobs-empty').hidden = data.jobs.length > 0;
      $('#jobs-empty').textContent = box.value.trim() ? 'No job matches \u201c' + box.value.trim() + '\u201d.' : 'No job here yet.';
      const more = $('#jobs-more');
      more.hidden = data.matched <= data.jobs.length;
      more.textContent = 'Showing the newest ' + data.jobs.length + ' of ' + data.matched.toLocaleString() + ' matching jobs; refine the search to see others.';
      $('#jobs-sub').textContent = 'Running jobs, the last ' + (data.searched - (data.counts.running || 0)).toLocaleString() +
        ' that ended, and up to ' + data.max_failures + ' failed and lost ones.' +
        (data.show_coro_args ? '' : ' Arguments are hidden, so the search looks at ids and names only.');
      return data;
    }

    poll(async function () {
      const query = url();
      query.set('limit', '100');
      return render(await request('GET', '/api/jobs?' + query));
    });
    return last;
  }

  // ------------------------------------------------------------ Node page

  function nodePage() {
    const addr = body.dataset.node;
    remember('node', addr);
    const table = $('#servers-table');
    const HISTORY = 720;
    let last = null, history = [], epoch = null;
    const tiles = CHARTS.map(function (spec) {
      return el('div', {class: 'chart', style: '--c:' + spec.color, 'data-chart': spec.label});
    });
    $('#charts').replaceChildren.apply($('#charts'), tiles);
    const sorted = sorter(table, 'servers', {key: 'location', dir: 1}, function () { if (last) render(last); });
    let width = window.innerWidth;
    window.addEventListener('resize', function () {
      if (last && Math.abs(window.innerWidth - width) > 20) { width = window.innerWidth; drawCharts(last); }
    });

    function drawCharts(data) {
      const stale = data.state !== 'up' || data.stale;
      CHARTS.forEach(function (spec, i) { loadChart(tiles[i], spec, history, stale); });
      $('#avail-hint').textContent = history.length ?
        history.length + ' report' + (history.length === 1 ? '' : 's') + ' \u00b7 latest ' + clock(history[history.length - 1][0]) +
        (data.pulse_interval ? ' \u00b7 every ' + duration(data.pulse_interval) : '') :
        'The node reports its load at every pulse of the computation.';
    }

    function render(data) {
      last = data;
      ungone();
      if (data.history_full || data.epoch !== epoch) history = [];
      epoch = data.epoch;
      history = history.concat(data.history || []);
      if (history.length > HISTORY) history = history.slice(history.length - HISTORY);
      setPill($('#status'), data.state);
      downBanner(data, 'Node');
      if (data.state === 'up' && data.stale) {
        const banner = $('#down');
        banner.hidden = false;
        banner.className = 'banner warn';
        banner.textContent = 'No report from this node for ' + duration(data.report_age) +
          ' (it reports every ' + duration(data.pulse_interval) + '): the figures below may be old.';
      }
      const sub = $('#node-sub');
      sub.replaceChildren(el('b', {}, data.name || data.addr));
      if (data.platform) sub.append(el('span', {class: 'sep'}, '\u00b7'), data.platform);
      if (data.cpus) sub.append(el('span', {class: 'sep'}, '\u00b7'), data.cpus + ' server' + (data.cpus === 1 ? '' : 's') + ' offered');
      fill($('#cards'), [
        card('Servers', data.servers.filter(function (s) { return s.state === 'up'; }).length, '#0e9aa7', 'up'),
        card('Running', data.coros_running, '#e49b2c', 'right now'),
        card('Finished', data.coros_finished, '#16875a', 'normally'),
        card('Failed', data.coros_failed, '#c23b3b', 'with an exception'),
        card('Lost', data.coros_lost, '#5d6778', 'with their server')]);
      drawCharts(data);
      const rows = sorted(data.servers, function (s, k) { return s[k]; }, 'location').map(function (server) {
        const up = server.state === 'up';
        return el('tr', {'data-server': server.location, class: up ? null : 'old'},
          el('td', {class: 'node-cell lead'}, el('a', {href: serverHref(server.location)}, server.location),
             server.pid ? el('span', {class: 'name'}, 'pid ' + server.pid) : null),
          el('td', {}, pill(server.state, server.cause)),
          el('td', {class: 'num strong'}, count(server.coros_running)),
          el('td', {class: 'num'}, count(server.coros_submitted)),
          el('td', {class: 'num'}, count(server.coros_done)),
          el('td', {class: 'num'}, up && server.cpu !== null && server.cpu !== undefined ? percent(server.cpu) : el('span', {class: 'dim'}, '\u2014')),
          el('td', {class: 'num'}, up && server.rss ? bytes(server.rss) : el('span', {class: 'dim'}, '\u2014')));
      });
      fill(table.tBodies[0], rows);
      $('#servers-empty').hidden = rows.length > 0;
      return data;
    }

    poll(async function () {
      let query = '';
      if (history.length && epoch !== null) query = '?since=' + history[history.length - 1][0] + '&epoch=' + epoch;
      return render(await request('GET', '/api/node/' + encodeURIComponent(addr) + query));
    });
  }

  // ------------------------------------------------------------ Server page

  const LIMIT = 100;

  function serverPage() {
    const where = body.dataset.server;
    const url = '/api/server/' + encodeURIComponent(where) + '?limit=' + LIMIT;
    remember('server', where);
    remember('node', body.dataset.node);
    const selected = new Set();
    let running = [];
    const button = $('#terminate'), all = $('#select-all');

    function updateSelection() {
      const n = selected.size;
      button.disabled = n === 0;
      button.textContent = n ? 'Terminate ' + n + ' selected' : 'Terminate selected';
      $('#selection').textContent = n ? n + ' of ' + running.length + ' selected' : 'Select coroutines to terminate them';
      all.checked = n > 0 && n === running.length;
      all.indeterminate = n > 0 && n < running.length;
      document.querySelectorAll('#coros-table tbody tr').forEach(function (tr) {
        tr.classList.toggle('selected', selected.has(tr.dataset.coro));
      });
    }

    all.addEventListener('change', function () {
      running.forEach(function (c) { if (all.checked) selected.add(c.coro); else selected.delete(c.coro); });
      document.querySelectorAll('#coros-table tbody input').forEach(function (box) { box.checked = all.checked; });
      updateSelection();
    });

    /* A selection is of running jobs only: before terminating, ask again which still run
       and drop the others, saying so; only those still running are terminated. */
    button.addEventListener('click', async function () {
      button.disabled = true;
      const banner = $('#result');
      const notes = [];
      try {
        const data = await request('GET', url);
        running = data.coros;
        const dropped = dropEnded();
        render(data);
        if (dropped.length) {
          notes.push(dropped.length + ' of the selected jobs ' + (dropped.length === 1 ? 'has' : 'have') +
                     ' ended meanwhile and ' + (dropped.length === 1 ? 'was' : 'were') + ' unselected: ' + dropped.join(', '));
        }
        const coros = Array.from(selected);
        if (coros.length) {
          const result = await request('POST', '/api/terminate', {coro: coros});
          result.terminated.forEach(function (c) { selected.delete(c); });
          result.finished.forEach(function (f) { selected.delete(f.coro); });
          result.unknown.forEach(function (c) { selected.delete(c); });
          notes.unshift(result.message.charAt(0).toUpperCase() + result.message.slice(1));
          banner.className = 'banner ' + (result.terminated.length && !result.failed.length && !dropped.length ? 'ok' : 'warn');
        } else {
          banner.className = 'banner warn';
          notes.push('nothing was terminated');
        }
        banner.textContent = notes.join('; ') + '.';
      } catch (err) {
        banner.className = 'banner bad';
        banner.textContent = 'Could not terminate: ' + err.message;
      }
      banner.hidden = false;
      clearTimeout(banner.timer);
      banner.timer = setTimeout(function () { banner.hidden = true; }, 20000);
      updateSelection();
      refresh();
    });

    function dropEnded() {
      const known = new Set(running.map(function (c) { return c.coro; }));
      const dropped = [];
      selected.forEach(function (c) { if (!known.has(c)) { selected.delete(c); dropped.push(c); } });
      return dropped;
    }

    function render(data) {
      ungone();
      running = data.coros;
      dropEnded();
      setPill($('#status'), data.state);
      downBanner(data, 'Server');
      const sub = $('#server-sub');
      sub.replaceChildren('On node ', el('a', {href: nodeHref(data.node)}, el('b', {class: 'mono'}, data.node)));
      if (data.name && data.name !== data.node) sub.append(' (' + data.name + ')');
      if (data.pid) sub.append(el('span', {class: 'sep'}, '\u00b7'), 'pid ' + data.pid);
      if (data.state === 'up' && data.cpu !== null && data.cpu !== undefined) sub.append(el('span', {class: 'sep'}, '\u00b7'), 'CPU ' + percent(data.cpu));
      if (data.state === 'up' && data.rss) sub.append(el('span', {class: 'sep'}, '\u00b7'), bytes(data.rss) + ' resident');
      const ended = data.recent || [];
      const endedCount = function (state) { return ended.filter(function (c) { return c.state === state; }).length; };
      fill($('#cards'), [
        card('Running', data.coros_running, '#e49b2c', 'right now'),
        card('Ended', data.coros_done, '#16875a', endedCount('failed') + endedCount('lost') ? (endedCount('failed') + endedCount('lost')) + ' failed or lost lately' : 'none failed lately'),
        card('Submitted', data.coros_submitted, '#5b8def', 'in all')]);
      const now = data.time;
      fill($('#coros-table').tBodies[0], running.map(function (c) {
        const box = el('input', {type: 'checkbox', 'aria-label': 'Select ' + c.coro});
        box.checked = selected.has(c.coro);
        box.addEventListener('change', function () {
          if (box.checked) selected.add(c.coro); else selected.delete(c.coro);
          updateSelection();
        });
        return el('tr', {'data-coro': c.coro},
          el('td', {class: 'check'}, el('label', {class: 'hit'}, box)),
          el('td', {class: 'coro lead'}, c.coro),
          el('td', {class: 'strong'}, c.name),
          argsCell(c, data.show_coro_args),
          el('td', {}, when(c.start_time)),
          el('td', {class: 'num'}, duration(now - c.start_time)));
      }));
      $('#coros-empty').hidden = running.length > 0;
      const more = $('#coros-more');
      more.hidden = data.coros_running <= running.length;
      more.replaceChildren('Showing the ' + running.length + ' oldest of ' + data.coros_running + ' running coroutines; ',
                           el('a', {href: '/jobs?state=running&q=' + encodeURIComponent('@' + where)}, 'search them all'), '.');
      fill($('#recent-table').tBodies[0], ended.map(function (c) {
        return el('tr', {'data-coro': c.coro, class: 'j-' + c.state},
          el('td', {class: 'coro lead'}, c.coro),
          el('td', {class: 'strong'}, c.name),
          el('td', {}, when(c.start_time)),
          el('td', {}, when(c.end_time)),
          el('td', {class: 'num'}, duration(c.end_time - c.start_time)),
          outcome(c));
      }));
      $('#recent-empty').hidden = ended.length > 0;
      updateSelection();
      return data;
    }

    poll(async function () { return render(await request('GET', url)); });
  }

  // ------------------------------------------------------------ start

  buildHeader();
  if (page === 'cluster') clusterPage();
  else if (page === 'jobs') jobsPage();
  else if (page === 'node') nodePage();
  else if (page === 'server') serverPage();
})();
