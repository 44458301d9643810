// The console's charts: reads the page's JSON data block and draws each chart with the
// vendored Apache ECharts. No other script runs on the console's pages.
(function () {
  "use strict";
  var FONT = '"WenQuanYi Micro Hei","Noto Sans CJK SC","PingFang SC","Microsoft YaHei",sans-serif';
  var COLOURS = ["#8c1c13", "#3b6fb6", "#e0a32e", "#4f9a6a", "#7a5aa6", "#c2571a"];

  function option(chart) {
    var horizontal = chart.kind === "bar" && chart.categories.length > 8;
    var categoryAxis = {type: "category", data: chart.categories,
      axisLabel: {fontFamily: FONT, interval: 0, rotate: !horizontal && chart.categories.length > 6 ? 30 : 0}};
    var valueAxis = {type: "value", name: chart.unit, minInterval: 1,
      nameTextStyle: {fontFamily: FONT}, axisLabel: {fontFamily: FONT}};
    return {
      color: COLOURS,
      textStyle: {fontFamily: FONT},
      title: {text: chart.title, textStyle: {fontFamily: FONT, fontSize: 13}},
      tooltip: {trigger: "axis"},
      legend: {top: 0, right: 0, textStyle: {fontFamily: FONT},
        show: chart.series.length > 1},
      grid: {left: 48, right: 16, top: 40, bottom: 36, containLabel: true},
      xAxis: horizontal ? valueAxis : categoryAxis,
      yAxis: horizontal ? categoryAxis : valueAxis,
      series: chart.series.map(function (s) {
        return {name: s.name, type: chart.kind, data: s.data, smooth: chart.kind === "line",
          barMaxWidth: 36};
      })
    };
  }

  function draw() {
    var block = document.getElementById("console-data");
    if (!block) { return; }
    var data = JSON.parse(block.textContent);
    if (typeof window.echarts === "undefined") {
      document.querySelectorAll(".chart").forEach(function (el) {
        el.textContent = "图表组件未加载，请查看右侧表格。";
      });
      return;
    }
    var drawn = [];
    data.charts.forEach(function (chart) {
      var el = document.getElementById(chart.id);
      if (!el) { return; }
      var instance = window.echarts.init(el, null, {renderer: "canvas"});
      instance.setOption(option(chart));
      // A bar of a place drills down, as its name in the table does.
      instance.on("click", function (params) {
        var link = chart.links && chart.links[params.dataIndex];
        if (link) { window.location.href = link; }
      });
      el.setAttribute("data-drawn", "true");
      drawn.push(instance);
    });
    window.addEventListener("resize", function () {
      drawn.forEach(function (c) { c.resize(); });
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", draw);
  } else {
    draw();
  }
})();
