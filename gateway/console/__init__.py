"""GET /console: a read-only operations page served by the gateway itself.

``assets`` serves the page's three files, ``handlers`` its JSON (overview and trace),
``sampler`` keeps the last minutes of this worker's counters for rates and the chart.
"""
