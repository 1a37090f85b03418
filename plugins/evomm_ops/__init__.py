"""Merge operators: linear, SLERP, task arithmetic, TIES, DARE, breadcrumbs, DELLA, model stock, passthrough."""
