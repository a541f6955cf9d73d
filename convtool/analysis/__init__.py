"""Static analysis: shapes, parameters, MACs (:mod:`.costs`), output drift (:mod:`.drift`).

Submodules are imported explicitly (``from convtool.analysis.costs import node_costs``) so that
importing the package stays cheap.
"""
