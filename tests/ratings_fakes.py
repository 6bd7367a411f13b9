"""Synthetic ratings tables for the ratings tests (no MovieLens file is used).

`latent_factor_table` draws ratings on a 1-10 scale from a low-rank model, with
string item ids and column names that are not MovieLens's, so the generic
reader, trainer and exported vocabulary are exercised as a user's own data
would exercise them.
"""

import numpy as np
import pandas as pd

COLUMNS = dict(user_col="customer", item_col="product", rating_col="stars",
               timestamp_col="when")


def latent_factor_table(num_users=120, num_items=60, rank=3, seed=0, rated=0.7,
                        rating_min=1, rating_max=10, duplicates=0):
    """A ratings frame: customer (int), product (str), stars (1-10), when (int).

    `duplicates` extra rows repeat a (customer, product) pair with another
    rating and a later timestamp: under the reader's rule they win.
    """
    rng = np.random.default_rng(seed)
    users = rng.normal(size=[num_users, rank])
    items = rng.normal(size=[num_items, rank])
    bias = rng.normal(0.0, 1.0, size=num_items)
    middle = 0.5 * (rating_min + rating_max)
    scores = middle + 1.5 * users @ items.T + bias + rng.normal(0, 0.5, [num_users, num_items])
    values = np.clip(np.round(scores), rating_min, rating_max)
    mask = rng.random([num_users, num_items]) < rated
    u, i = np.nonzero(mask)
    order = rng.permutation(len(u))
    u, i = u[order], i[order]
    frame = pd.DataFrame({
        "customer": 1000 + u,
        "product": [f"sku-{k:04d}" for k in i],
        "stars": values[u, i].astype(np.int64),
        "when": 1_600_000_000 + np.arange(len(u)),
    })
    if duplicates:
        picked = frame.sample(duplicates, random_state=seed)
        later = picked.assign(
            stars=(picked["stars"] % rating_max) + rating_min,  # another value
            when=picked["when"] + 10_000_000)
        # Written before the originals, so only the timestamp can pick them.
        frame = pd.concat([later, frame], ignore_index=True)
    return frame


if __name__ == "__main__":
    import os  # pylint: disable=g-import-not-at-top
    import sys  # pylint: disable=g-import-not-at-top
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m tests.ratings_fakes OUT_DIR  (writes shop.csv and "
                         "items.csv, the example of docs/own_data.md)")
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    table = latent_factor_table(num_users=600, num_items=200, duplicates=25, seed=0)
    table.to_csv(os.path.join(out, "shop.csv"), index=False)
    products = sorted(set(table["product"]))
    pd.DataFrame({"product": products, "name": [f"Product {p[4:]}" for p in products]}).to_csv(
        os.path.join(out, "items.csv"), index=False)
    print(f"{out}/shop.csv: {len(table)} rows; {out}/items.csv: {len(products)} items")
