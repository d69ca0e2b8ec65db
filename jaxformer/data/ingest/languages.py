"""Languages: which files are programming language (PL) or natural language (NL), by name, and the folder
(and seqio task-name part) each language name gets."""

import hashlib
import pathlib
import re

PL_EXTENSIONS = {
  ".py": "python",
  ".pyi": "python",
  ".pyx": "cython",
  ".pxd": "cython",
  ".c": "c",
  ".h": "c",
  ".cc": "c++",
  ".cpp": "c++",
  ".cxx": "c++",
  ".hpp": "c++",
  ".hh": "c++",
  ".hxx": "c++",
  ".inc": "c++",
  ".cu": "cuda",
  ".cuh": "cuda",
  ".sh": "shell",
  ".bash": "shell",
  ".zsh": "shell",
  ".js": "javascript",
  ".mjs": "javascript",
  ".cjs": "javascript",
  ".ts": "typescript",
  ".java": "java",
  ".go": "go",
  ".rs": "rust",
  ".rb": "ruby",
  ".pl": "perl",
  ".pm": "perl",
  ".lua": "lua",
  ".php": "php",
  ".tcl": "tcl",
  ".el": "emacs-lisp",
  ".scm": "scheme",
  ".r": "r",
  ".jl": "julia",
  ".swift": "swift",
  ".kt": "kotlin",
  ".scala": "scala",
  ".cs": "c#",
  ".sql": "sql",
  ".cmake": "cmake",
  ".mk": "make",
  ".m4": "m4",
  ".awk": "awk",
  ".vim": "vim",
  ".hs": "haskell",
  ".ml": "ocaml",
  ".f90": "fortran",
  ".f": "fortran",
  ".proto": "protobuf",
  ".css": "css",
  ".html": "html",
  # the rest of CodeGen2's (The Stack dedup: c-sharp, dart, vue, ...) and StarCoder's languages
  ".dart": "dart",
  ".vue": "vue",
  ".tsx": "typescript",
  ".jsx": "javascript",
  ".kts": "kotlin",
  ".php3": "php",
  ".ps1": "powershell",
  ".bat": "batchfile",
  ".cmd": "batchfile",
  ".clj": "clojure",
  ".cljs": "clojure",
  ".coffee": "coffeescript",
  ".lisp": "common-lisp",
  ".lsp": "common-lisp",
  ".ex": "elixir",
  ".exs": "elixir",
  ".elm": "elm",
  ".erl": "erlang",
  ".hrl": "erlang",
  ".fs": "f#",
  ".fsx": "f#",
  ".groovy": "groovy",
  ".gradle": "groovy",
  ".glsl": "glsl",
  ".frag": "glsl",
  ".vert": "glsl",
  ".ada": "ada",
  ".adb": "ada",
  ".ads": "ada",
  ".agda": "agda",
  ".als": "alloy",
  ".g4": "antlr",
  ".applescript": "applescript",
  ".asm": "assembly",
  ".s": "assembly",
  ".bsv": "bluespec",
  ".idr": "idris",
  ".thy": "isabelle",
  ".jsp": "java-server-pages",
  ".lean": "lean",
  ".lagda": "literate-agda",
  ".litcoffee": "literate-coffeescript",
  ".lhs": "literate-haskell",
  ".mpl": "maple",
  ".mathematica": "mathematica",
  ".wl": "mathematica",
  ".matlab": "matlab",
  ".pas": "pascal",
  ".rkt": "racket",
  ".sas": "sas",
  ".st": "smalltalk",
  ".sol": "solidity",
  ".sparql": "sparql",
  ".rq": "sparql",
  ".stan": "stan",
  ".sml": "standard-ml",
  ".ado": "stata",
  ".sv": "systemverilog",
  ".svh": "systemverilog",
  ".tcsh": "tcsh",
  ".csh": "tcsh",
  ".tex": "tex",
  ".sty": "tex",
  ".thrift": "thrift",
  ".v": "verilog",
  ".vh": "verilog",
  ".vhd": "vhdl",
  ".vhdl": "vhdl",
  ".vb": "visual-basic",
  ".bas": "visual-basic",
  ".xsl": "xslt",
  ".xslt": "xslt",
  ".y": "yacc",
  ".yy": "yacc",
  ".zig": "zig",
  ".nim": "nim",
  ".cr": "crystal",
}
# Data and markup formats StarCoder also trained on (json, yaml, xml) are left out on purpose: this
# machine holds many large generated ones, which would fill the embedded corpus's PL budget.
PL_FILENAMES = {"Makefile": "make", "CMakeLists.txt": "cmake", "Dockerfile": "dockerfile"}
NL_EXTENSIONS = {".md": "markdown", ".rst": "restructuredtext", ".txt": "text"}
NL_FILENAMES = {"METADATA": "metadata", "PKG-INFO": "metadata", "copyright": "text"}
NL_PREFIXES = ("README", "NEWS", "CHANGELOG", "changelog", "HISTORY", "AUTHORS", "CONTRIBUTING")


def classify(path: pathlib.Path) -> tuple[str, str] | None:
  """('pl' | 'nl', language) for a file name, or None for files we do not read.

  A '.gz' suffix (Debian's /usr/share/doc) is looked through for NL documents.
  """
  name = path.name
  if name.endswith(".gz"):
    inner = classify(path.with_name(name[:-3]))
    return inner if inner and inner[0] == "nl" else None
  if name in PL_FILENAMES:
    return "pl", PL_FILENAMES[name]
  suffix = path.suffix.lower()
  if suffix in PL_EXTENSIONS:
    return "pl", PL_EXTENSIONS[suffix]
  if name in NL_FILENAMES:
    return "nl", NL_FILENAMES[name]
  if suffix in NL_EXTENSIONS:
    return "nl", NL_EXTENSIONS[suffix]
  if name.startswith(NL_PREFIXES):
    return "nl", "text"
  return None


def language_dir(name: str) -> str:
  """The folder (and seqio task-name part) of a language: lowercase [a-z0-9_] only, stable.

  'C++' -> 'cpp', 'C#' -> 'csharp', 'F#' -> 'fsharp', 'Objective-C++' -> 'objective_cpp',
  'Jupyter Notebook' -> 'jupyter_notebook'; an empty name -> 'unknown'; a name with no ASCII letter
  or digit ('日本語') -> 'lang_' and 8 hex digits of its sha1, so such names never share a folder.
  """
  raw = str(name).strip()
  folder = re.sub(r"[^a-z0-9]+", "_", raw.lower().replace("++", "pp").replace("#", "sharp")).strip("_")
  if folder or not raw:
    return folder or "unknown"
  return "lang_" + hashlib.sha1(raw.encode("utf-8", "surrogatepass")).hexdigest()[:8]


def shared_folders(language_dirs: dict) -> dict:
  """{folder: [languages]} for folders that several language names map to ('C++' and 'cpp')."""
  by_folder = {}
  for language, folder in language_dirs.items():
    by_folder.setdefault(folder, []).append(language)
  return {folder: sorted(names) for folder, names in by_folder.items() if len(names) > 1}
