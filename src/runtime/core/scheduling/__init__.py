"""Layer 4: where work fits.

The resource ledger, node picking and placement group bundle placement (pure logic, no I/O).
"""
