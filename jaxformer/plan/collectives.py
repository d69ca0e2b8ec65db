"""The collectives of a compiled program, read from its HLO text, and the time they take on a TPU slice.

Each all-gather, reduce-scatter, all-reduce, all-to-all and collective-permute (synchronous, or the
`-start` half of an async pair) gives its per-device bytes and its group size (replica_groups, in
either of HLO's spellings). Its time is the bandwidth term of the ring algorithm over a group of n
devices (latency terms are left out; at these sizes they are microseconds):

  all-gather       (n - 1) / n * output bytes   / bandwidth
  reduce-scatter   (n - 1)     * output bytes   / bandwidth   (the input is n outputs)
  all-reduce       2 (n - 1) / n * bytes        / bandwidth   (a reduce-scatter, then an all-gather)
  all-to-all       (n - 1) / n * bytes          / bandwidth
  collective-permute          bytes            / bandwidth

`bandwidth` is the chip's all-reduce bandwidth over ICI, from each generation's published figures
(ICI_BYTES_PER_SECOND below, with sources), for groups inside a slice; a group that spans slices
(its devices on several slices, which the mesh's DCN axis makes) moves at the chip's DCN bandwidth
instead. A program compiled for several slices (libtpu's multislice, "megascale") spells its DCN
collectives otherwise: the cross-slice half becomes a host-transfer `send` (with its `recv`) whose
frontend attributes name the transfer (`_xla_megascale_transfer_type="ALL_REDUCE"`); each such send
is one collective of its kind over the slices, its bytes the sent buffer's, at DCN bandwidth, while
the in-slice halves stay ordinary collectives over ICI. Communication inside a while loop is counted
once per iteration only where the caller passes programs without loops (plan/roofline.py's loop-free
programs), as for FLOPs.
"""

import re

# Per-chip bandwidth of a ring collective over ICI, bytes/s: each generation's published "all-reduce
# bandwidth per Pod" divided by the Pod's chips (Cloud TPU system architecture pages, read 2026-12-05:
# cloud.google.com/tpu/docs/v4, v5e, v6e): v4 1.1 PB/s / 4,096, v5e 51.2 TB/s / 256, v6e
# 102.4 TB/s / 256. For v5e and v6e that is half the chip's bidirectional ICI bandwidth (400 and
# 800 GB/s); v5p publishes no Pod figure, so half its bidirectional 1,200 GB/s (docs/v5p).
ICI_BYTES_PER_SECOND = {
  "TPU v4": 1.1e15 / 4096,
  "TPU v5": 600e9,  # v5p's device_kind
  "TPU v5p": 600e9,
  "TPU v5 lite": 51.2e12 / 256,
  "TPU v6 lite": 102.4e12 / 256,
}
# Per-chip DCN bandwidth, bytes/s: v5p 50 Gbps per chip (docs/v5p); v5e two 100 Gbps NICs per 8-chip
# host (docs/v5e), 25 Gbps per chip. v4 and v6e publish none: taken as v5e's (an assumption, named in
# docs/TPU.md).
DCN_BYTES_PER_SECOND = {"TPU v4": 25e9 / 8, "TPU v5": 50e9 / 8, "TPU v5p": 50e9 / 8, "TPU v5 lite": 25e9 / 8}
DCN_BYTES_PER_SECOND["TPU v6 lite"] = 25e9 / 8
KINDS = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all", "collective-permute")
_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "f32": 4}
_DTYPE_BYTES.update({"s64": 8, "u64": 8, "f64": 8, "f8e4m3fn": 1, "f8e5m2": 1})
_INSTRUCTION = re.compile(
  r"=\s*(?P<shape>\([^=]*?\)|\S+)\s+(?P<op>all-gather|reduce-scatter|all-reduce|all-to-all|collective-permute)"
  r"(?P<start>-start)?\("
)
_ARRAY = re.compile(r"\b(?P<dtype>[a-z]+\d*[a-z0-9]*)\[(?P<dims>[\d,]*)\]")
_GROUPS_LIST = re.compile(r"replica_groups=\{(\{[\d,]*\}(?:,\{[\d,]*\})*)\}")
_GROUPS_IOTA = re.compile(r"replica_groups=\[(?P<dims>[\d,]+)\]<=\[")
_GROUPS_MESH = re.compile(r"replica_groups=mesh\[(?P<axes>[^\]]*)\]\s*\{(?P<used>[^}]*)\}")
_AXIS = re.compile(r"'(?P<name>[^']+)'=(?P<size>\d+)")
_COMPUTATION = re.compile(r"^\s*(?:ENTRY\s+)?%(?P<name>[\w.\-]+)\s*\(")
_MEGASCALE = re.compile(
  r"=\s*\((?P<first>[a-z]+\d*[a-z0-9]*\[[\d,]*\])[^=]*?\bsend\(.*_xla_megascale_transfer_type=\"(?P<type>\w+)\""
)
_MEGASCALE_KINDS = {
  "ALL_REDUCE": "all-reduce",
  "ALL_GATHER": "all-gather",
  "REDUCE_SCATTER": "reduce-scatter",
  "ALL_TO_ALL": "all-to-all",
}
_PAIRS = re.compile(r"source_target_pairs=\{(\{\d+,\d+\}(?:,\{\d+,\d+\})*)\}")


def _arrays(shape: str) -> list[int]:
  """Byte sizes of the arrays in an HLO shape (one array, or a tuple of them)."""
  sizes = []
  for found in _ARRAY.finditer(shape):
    if found.group("dtype") not in _DTYPE_BYTES:
      continue
    dims = [int(d) for d in found.group("dims").split(",") if d]
    count = 1
    for d in dims:
      count *= d
    sizes.append(count * _DTYPE_BYTES[found.group("dtype")])
  return sizes


def _group(line: str, num_devices: int) -> tuple[int, list[int] | None]:
  """(group size, the first group's device ids) of a collective's line, in any of HLO's spellings:
  listed groups ({{0,1},{2,3}}), an iota ([2,4]<=[8]: the first group's ids are not worked out), or
  a mesh (mesh['axis_0'=4,'axis_1'=2] {'axis_0'}: devices row-major over the axes, the group over the
  named ones)."""
  listed = _GROUPS_LIST.search(line)
  if listed:
    first = [int(d) for d in listed.group(1).split("}")[0].strip("{").split(",") if d]
    return len(first), first
  mesh = _GROUPS_MESH.search(line)
  if mesh:
    axes = [(a.group("name"), int(a.group("size"))) for a in _AXIS.finditer(mesh.group("axes"))]
    used = set(re.findall(r"'([^']+)'", mesh.group("used")))
    strides, stride = {}, 1
    for name, size in reversed(axes):
      strides[name] = stride
      stride *= size
    first = [0]
    for name, size in axes:
      if name in used:
        first = [d + i * strides[name] for d in first for i in range(size)]
    return len(first), sorted(first)
  iota = _GROUPS_IOTA.search(line)
  if iota:
    return int(iota.group("dims").split(",")[-1]), None
  return num_devices, None


def parse(hlo_text: str, num_devices: int, num_slices: int = 1) -> list[dict]:
  """Every collective of a compiled HLO module: {kind, bytes (per device, the moved buffer), group,
  first_group, dcn (a multislice program's cross-slice transfer, over num_slices)}. An async pair is
  counted at its -start; bytes are its output (the gathered, scattered or reduced result), for a tuple
  the second half of its arrays (operands come first). The TPU compiler writes a reduce-scatter as an
  all-reduce inside an `all-reduce-scatter` fusion that keeps one slice: it is counted as the
  reduce-scatter it is, its output a group-th of the all-reduce's."""
  found, computation = [], ""
  for line in hlo_text.splitlines():
    header = _COMPUTATION.match(line)
    if header and " = " not in line:
      computation = header.group("name")
      continue
    megascale = _MEGASCALE.search(line)
    if megascale:
      kind = _MEGASCALE_KINDS.get(megascale.group("type"), "collective-permute")
      size = sum(_arrays(megascale.group("first")))
      found.append({"kind": kind, "bytes": size, "group": num_slices, "first_group": None, "dcn": True})
      continue
    match = _INSTRUCTION.search(line)
    if not match:
      continue
    kind, sizes = match.group("op"), _arrays(match.group("shape"))
    if not sizes:
      continue
    if match.group("start") and len(sizes) > 1 and kind != "all-reduce":
      sizes = sizes[len(sizes) // 2 :] if kind != "collective-permute" else sizes[1:2]
    size, first = _group(line, num_devices)
    if kind == "collective-permute":
      size = 2 if _PAIRS.search(line) else size
    total = sum(sizes)
    if kind == "all-reduce" and computation.startswith("all-reduce-scatter"):
      kind, total = "reduce-scatter", total // max(size, 1)
    found.append({"kind": kind, "bytes": total, "group": size, "first_group": first, "dcn": False})
  return found


def seconds(collective: dict, bandwidth: float) -> float:
  """The ring-algorithm bandwidth time of one collective (module docstring)."""
  n, size = collective["group"], collective["bytes"]
  if n <= 1:
    return 0.0
  factor = {
    "all-gather": (n - 1) / n,
    "reduce-scatter": n - 1,
    "all-reduce": 2 * (n - 1) / n,
    "all-to-all": (n - 1) / n,
    "collective-permute": 1.0,
  }[collective["kind"]]
  return factor * size / bandwidth


def communication(hlo_text: str, num_devices: int, device_kind: str, devices_per_slice: int | None = None) -> dict:
  """Per-kind counts, bytes and seconds of a program's collectives, and their total time.

  devices_per_slice: where given (several slices), a multislice transfer (module docstring) and a listed
  group whose devices are on more than one slice (device ids in blocks of devices_per_slice) move at
  DCN bandwidth."""
  ici = ICI_BYTES_PER_SECOND.get(device_kind)
  dcn = DCN_BYTES_PER_SECOND.get(device_kind)
  if ici is None:
    raise ValueError(f"no published interconnect bandwidth for {device_kind!r} (known: {sorted(ICI_BYTES_PER_SECOND)})")
  by_kind = {kind: {"count": 0, "bytes": 0, "seconds": 0.0} for kind in KINDS}
  dcn_seconds = 0.0
  num_slices = num_devices // devices_per_slice if devices_per_slice else 1
  for collective in parse(hlo_text, num_devices, num_slices):
    first = collective["first_group"]
    spans = bool(devices_per_slice and first and len({d // devices_per_slice for d in first}) > 1)
    across = collective["dcn"] or spans
    time = seconds(collective, dcn if across else ici)
    entry = by_kind[collective["kind"]]
    entry["count"] += 1
    entry["bytes"] += collective["bytes"]
    entry["seconds"] += time
    dcn_seconds += time if across else 0.0
  return {
    "by_kind": by_kind,
    "seconds": sum(e["seconds"] for e in by_kind.values()),
    "dcn_seconds": dcn_seconds,
    "ici_bytes_per_second": ici,
    "dcn_bytes_per_second": dcn,
  }
