"""The paper's ablations (Tables 2, 5a–5e, Appendix B) as runnable studies on the toy world."""
